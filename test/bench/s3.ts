import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { CLI } from '../helpers/cache.js';
import { NIX_CLIENTS } from '../helpers/nix-clients.js';
import { buildClosure, generateKey, makeStaticCache, nixEnv, removeDir, substitute, type CacheKey, type Closure } from '../helpers/nix.js';
import { run, type RunResult } from '../helpers/proc.js';
import { startProxy } from '../helpers/proxy.js';
import { checkBucket, startS3Engine, type S3Engine } from '../helpers/s3-engine.js';
import { log, ratio, summary, table, type CaseReport } from './util.js';

/**
 * Cases 15 and 16 (issue 25): a lab's cache in an S3 bucket on a real engine
 * (radosgw, test/helpers/s3-engine.ts), against Nix 2.34's own s3:// store.
 * That Nix is built without AWS support (unsigned requests), so its buckets
 * are public; ours are the same engine and size.
 */
export interface S3BenchOptions {
  dir: string;
  smallLeaves: number;
  largeLeaves: number;
  largeBytes: number;
  rounds: number;
  only: Set<string>;
}

const S3_NIX = () => NIX_CLIENTS.find((c) => c.suite === 'sid')!;

function ok(what: string, res: RunResult): number {
  if (res.code !== 0) throw new Error(`${what} exited ${res.code}: ${res.stderr.slice(-800)}`);
  return res.ms / 1000;
}

export async function runS3Bench(o: S3BenchOptions): Promise<CaseReport[]> {
  await mkdir(o.dir, { recursive: true });
  const engine = await startS3Engine();
  try {
    log(`cases 15/16: building a closure of ${o.smallLeaves} small + ${o.largeLeaves} × ${o.largeBytes / 2 ** 20} MiB leaves`);
    const closure = await buildClosure(`bench-s3-${Date.now()}`, [
      ...Array.from({ length: o.smallLeaves }, (_, i) => ({ name: `small-${i}`, size: 2048 + i })),
      ...Array.from({ length: o.largeLeaves }, (_, i) => ({ name: `large-${i}`, size: o.largeBytes + i })),
    ]);
    const key = await generateKey(o.dir, 'lab.bench-s3-1');
    const reports: CaseReport[] = [];
    if (o.only.has('15')) reports.push(await pushCase(o, engine, closure, key));
    if (o.only.has('16')) reports.push(await readCase(o, engine, closure, key));
    return reports;
  } finally {
    await engine.stop();
  }
}

async function pushCase(o: S3BenchOptions, engine: S3Engine, closure: Closure, key: CacheKey): Promise<CaseReport> {
  const nix = S3_NIX();
  // That Nix's store (in its chroot) is empty: it copies from an uncompressed file:// cache of the closure (not timed).
  const source = join(o.dir, 'source');
  await makeStaticCache(source, [closure.root], key, 'none');
  const sides = {
    'nix-lan-cache push': (bucket: string) =>
      run(process.execPath, [CLI, 'push', '--to', engine.url(bucket), '--key-file', key.secretFile, '--quiet', closure.root], { env: { ...process.env, ...engine.env }, timeoutMs: 600_000 }),
    [`nix copy --to s3:// (${nix.name})`]: (bucket: string) => {
      const cmd = nix.wrap(['nix', '--extra-experimental-features', 'nix-command', 'copy', '--no-check-sigs', '--from', `file://${source}`, '--to', `${engine.url(bucket)}&compression=xz&secret-key=${key.secretFile}`, closure.root]);
      return run(cmd[0]!, cmd.slice(1), { env: nixEnv({ XDG_CACHE_HOME: join(o.dir, `xdg-copy-${bucket}`) }), timeoutMs: 600_000 });
    },
  };
  const names = Object.keys(sides);
  const first: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  const again: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  const problems: string[] = [];
  let n = 0;
  for (let r = 0; r < o.rounds; r++) {
    for (const side of names) {
      const bucket = `bench-push-${++n}`;
      await engine.createBucket(bucket, { publicReadWrite: true });
      const t1 = ok(side, await sides[side]!(bucket));
      const t2 = ok(`${side} again`, await sides[side]!(bucket));
      first[side]!.push(t1);
      again[side]!.push(t2);
      log(`  case 15 round ${r + 1} ${side}: ${t1.toFixed(2)} s, again ${t2.toFixed(2)} s`);
      if (r === 0) {
        const check = await checkBucket(engine, bucket);
        if (check.narinfos.size !== closure.paths.length) problems.push(`${side}: ${check.narinfos.size} narinfos, expected ${closure.paths.length}`);
        problems.push(...check.problems.slice(0, 3).map((p) => `${side}: ${p}`));
      }
    }
  }
  const base = names[1]!;
  return {
    title: `15. Push of a ${closure.paths.length}-path closure to an S3 bucket (radosgw) vs nix copy --to s3://`,
    markdown: [
      `A closure of ${closure.paths.length} paths built by real Nix (${o.smallLeaves} leaves of ~2 KiB, ${o.largeLeaves} of ${o.largeBytes / 2 ** 20} MiB of random bytes, a root), pushed into a fresh bucket on radosgw on 127.0.0.1 (xz, signed), then again (everything present). Wall time of the command; ${o.rounds} rounds, sides alternating.`,
      `\`nix-lan-cache push --to s3://…\` (defaults: \`--jobs\` = CPU count but at least 8 for a bucket, signed requests) reads this machine's store; \`${nix.name}\`'s \`nix copy --from file://SRC --to 's3://…&compression=xz&secret-key=SK'\` runs in its chroot and reads an uncompressed file:// copy of the closure (its own store is empty), sending unsigned requests (no AWS support in Debian's build).`,
      `Checked once per side (not timed): every narinfo's NAR exists with its FileSize/FileHash and every reference has a narinfo${problems.length ? `. **Problems:** ${problems.join('; ')}` : ': no problems'}.`,
      '',
      table(
        ['side', 'first push, s', `vs ${base}`, 'again (all present), s', `vs ${base}`],
        names.map((s) => [s, summary(first[s]!), ratio(first[s]!, first[base]!), summary(again[s]!), ratio(again[s]!, again[base]!)]),
      ),
    ].join('\n'),
  };
}

async function readCase(o: S3BenchOptions, engine: S3Engine, closure: Closure, key: CacheKey): Promise<CaseReport> {
  const nix = S3_NIX();
  // The same closure in two buckets: a private one the proxy reads signed, a public one for that Nix's unsigned requests.
  for (const [bucket, pub] of [['bench-read-private', false], ['bench-read-public', true]] as const) {
    await engine.createBucket(bucket, { publicReadWrite: pub });
    ok(`push to ${bucket}`, await run(process.execPath, [CLI, 'push', '--to', engine.url(bucket), '--key-file', key.secretFile, '--quiet', closure.root], { env: { ...process.env, ...engine.env }, timeoutMs: 600_000 }));
  }
  const names = [`${nix.name} → proxy → bucket`, `${nix.name} → s3:// directly`];
  const times: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  let n = 0;
  for (let r = 0; r < o.rounds; r++) {
    for (const side of names) {
      const i = ++n;
      const store = join(o.dir, `read-store-${i}`);
      const xdgCache = join(o.dir, `read-xdg-${i}`);
      // A fresh proxy each round: nothing in its memory from the last one.
      const proxy = side.includes('proxy')
        ? await startProxy(['--no-mdns', '--lan', engine.url('bench-read-private'), '--upstream', 'http://127.0.0.1:1/', '--trusted-public-key', key.publicKey], { env: engine.env })
        : undefined;
      try {
        const res = await substitute(store, [closure.root], proxy ? proxy.url : engine.url('bench-read-public'), { client: nix, xdgCache, trustedKeys: [key.publicKey], timeoutMs: 600_000 });
        times[side]!.push(ok(side, res));
        log(`  case 16 round ${r + 1} ${side}: ${res.ms.toFixed(0)} ms`);
      } finally {
        await proxy?.stop();
        await removeDir(store);
        await removeDir(xdgCache);
      }
    }
  }
  const base = names[1]!;
  return {
    title: `16. ${nix.name} substituting from an S3 bucket: through the proxy vs directly (s3://)`,
    markdown: [
      `The closure of case 15 (${closure.paths.length} paths) pushed into two buckets on radosgw on 127.0.0.1: a private one the proxy reads with signed requests (\`serve --lan s3://…\`, a fresh proxy per round, no upstream answering), and a public one ${nix.name} reads directly as \`s3://…\` (unsigned). Wall time of \`nix-store -r\` into a fresh store with a fresh narinfo cache; ${o.rounds} rounds, sides alternating.`,
      '',
      table(['side', 'nix-store -r, s', `vs ${base}`], names.map((s) => [s, summary(times[s]!), ratio(times[s]!, times[base]!)])),
    ].join('\n'),
  };
}
