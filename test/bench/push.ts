import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { checkCache, CLI } from '../helpers/cache.js';
import { buildClosure, generateKey, nixEnv, removeDir } from '../helpers/nix.js';
import { run, type RunResult } from '../helpers/proc.js';
import { log, ratio, summary, table, type CaseReport } from './util.js';

export interface PushOptions {
  dir: string;
  smallLeaves: number;
  largeLeaves: number;
  largeBytes: number;
  rounds: number;
}

const TITLE = '6. Push (200-path closure to a directory)';

/** Case 6: `nix-lan-cache push --to DIR` vs `nix copy --to file://DIR`, both xz and signing; then again with everything present. */
export async function runPush(o: PushOptions): Promise<CaseReport> {
  await mkdir(o.dir, { recursive: true });
  const help = await run(process.execPath, [CLI, 'push', '--help'], { timeoutMs: 30_000 });
  if (help.code !== 0) {
    log('case 6: push: not available yet');
    return { title: TITLE, markdown: `push: not available yet (\`nix-lan-cache push --help\` exited ${help.code}).` };
  }
  log(`case 6: building a closure of ${o.smallLeaves} small + ${o.largeLeaves} × ${o.largeBytes / 2 ** 20} MiB leaves`);
  const leaves = [
    ...Array.from({ length: o.smallLeaves }, (_, i) => ({ name: `small-${i}`, size: 2048 + i })),
    ...Array.from({ length: o.largeLeaves }, (_, i) => ({ name: `large-${i}`, size: o.largeBytes + i })),
  ];
  const closure = await buildClosure(`bench-push-${Date.now()}`, leaves);
  const key = await generateKey(o.dir, 'pi.bench-push-1');
  const sides = {
    'nix-lan-cache push': (dir: string) => run(process.execPath, [CLI, 'push', '--to', dir, '--key-file', key.secretFile, '--quiet', closure.root], { timeoutMs: 300_000 }),
    'nix copy': (dir: string) =>
      run('nix', ['copy', '--to', `file://${dir}?compression=xz&secret-key=${key.secretFile}`, closure.root], { env: nixEnv(), timeoutMs: 300_000 }),
  };
  type Side = keyof typeof sides;
  const first: Record<Side, number[]> = { 'nix-lan-cache push': [], 'nix copy': [] };
  const again: Record<Side, number[]> = { 'nix-lan-cache push': [], 'nix copy': [] };
  const problems: string[] = [];
  const ok = (what: string, res: RunResult) => {
    if (res.code !== 0) throw new Error(`${what} exited ${res.code}: ${res.stderr.slice(-500)}`);
    return res.ms / 1000;
  };
  let n = 0;
  for (let r = 0; r < o.rounds; r++) {
    for (const side of Object.keys(sides) as Side[]) {
      const dir = join(o.dir, `cache-${++n}`);
      const t1 = ok(side, await sides[side](dir));
      const t2 = ok(`${side} again`, await sides[side](dir));
      first[side].push(t1);
      again[side].push(t2);
      log(`  round ${r + 1} ${side}: ${t1.toFixed(2)} s, again ${t2.toFixed(2)} s`);
      if (r === 0) {
        const check = await checkCache(dir);
        if (check.narinfos.size !== closure.paths.length) problems.push(`${side}: ${check.narinfos.size} narinfos, expected ${closure.paths.length}`);
        problems.push(...check.problems.slice(0, 3).map((p) => `${side}: ${p}`));
        const verify = await run('nix', ['store', 'verify', '--store', `file://${dir}`, '--trusted-public-keys', key.publicKey, '-r', closure.root], { env: nixEnv(), timeoutMs: 120_000 });
        if (verify.code !== 0) problems.push(`${side}: nix store verify: ${verify.stderr.trim().split('\n').slice(-1)[0]}`);
      }
      await removeDir(dir);
    }
  }
  const S: Side[] = ['nix-lan-cache push', 'nix copy'];
  return {
    title: TITLE,
    markdown: [
      `A closure of ${closure.paths.length} paths built by real Nix: ${o.smallLeaves} leaves of ~2 KiB and ${o.largeLeaves} of ${o.largeBytes / 2 ** 20} MiB of random bytes, and a root. Each side pushes it into a fresh directory (xz, signed), then pushes it again (everything present). Wall time of the command. ${o.rounds} rounds, sides alternating. push runs with its defaults (\`--jobs\` = CPU count); \`nix copy --to 'file://DIR?compression=xz&secret-key=SK'\`.`,
      `Checked once per side (not timed): every narinfo's NAR exists with its FileSize/FileHash, every reference has a narinfo, and \`nix store verify --store file://DIR -r ROOT\` with the key accepts it${problems.length ? `. **Problems:** ${problems.join('; ')}` : ': no problems'}.`,
      '',
      table(
        ['side', 'first push, s', 'vs nix copy', 'again (all present), s', 'vs nix copy'],
        S.map((s) => [s, summary(first[s]), ratio(first[s], first['nix copy']), summary(again[s]), ratio(again[s], again['nix copy'])]),
      ),
    ].join('\n'),
  };
}
