/**
 * `npm run bench`: the proxy side by side with nginx and with Nix alone
 * (issue 8). Every process it starts goes through test/helpers/proc.ts and is
 * stopped by PID, also on failure or Ctrl-C. Loopback only.
 *
 *   npm run bench                      # everything, writes docs/benchmarks.md
 *   npm run bench -- --only 1,2,5      # some cases; prints, writes docs/benchmarks.md only with --write
 *   npm run bench -- --only 7,8,9,10   # faster than Nix alone (issue 15): home, slow link, wrong guesses, leaving home
 *   npm run bench -- --quick           # small sizes, for checking the script itself
 *   npm run bench -- --only 7 --write  # run some cases and replace only their sections in docs/benchmarks.md
 *   npm run bench -- --only 13         # a house without a Pi: one laptop fetches from another's share (issue 24)
 *   npm run bench -- --only hold       # what holding a Pi's NAR back until verified costs (issue 22)
 *   npm run bench -- --only soak       # case 14: 30 minutes of a flapping link, the proxy's RSS over time (issue 26);
 *                                      # NLC_SOAK_MS sets the duration, NLC_SOAK_CLIENTS=bookworm,trixie,sid rotates Nix clients (default sid)
 *   npm run bench -- --only 15,16      # a lab's cache in an S3 bucket (radosgw) vs Nix 2.34's own s3:// store (issue 25)
 *   npm run bench -- --only 17         # every Nix on every link, Nix alone vs the proxy (issue 23)
 *   npm run bench -- --only 17 --links home --clients 2.34 --profile perf   # one link, one Nix, with a CPU profile of the proxy
 *   BENCH_BEFORE_CLI=OLD/dist/cli/main.js npm run bench -- --only 17 --links home   # another build beside this one, in turn (docs/cpu-profile.md)
 */
import { readFile, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { removeDir, tempDir } from '../helpers/nix.js';
import { stopAll } from '../helpers/proc.js';
import { runAway } from './away.js';
import { runFillBench } from './fill.js';
import { runFaster } from './faster.js';
import { runEveryNix } from './every-nix.js';
import { runLeaving } from './leaving.js';
import { runHome } from './home.js';
import { runNarCompressed } from './nar-compressed.js';
import { describeMachine } from './machine.js';
import { PEER_DIRECTIVES } from './peer.js';
import { runPush } from './push.js';
import { runS3Bench } from './s3.js';
import { runSharing } from './sharing.js';
import { runSoak } from './soak.js';
import { log, table, type CaseReport } from './util.js';

const PEER_NOTES: CaseReport = {
  title: '4. The nginx peer: what it cannot do',
  markdown: [
    'The peer is measured in cases 1–3 (rows "nginx peer"), with this config (`test/bench/peer.ts`):',
    '',
    '```nginx',
    PEER_DIRECTIVES('PI_HOST:PORT', 'UPSTREAM_HOST:PORT', 8080).trim(),
    '```',
    '',
    'What it gets wrong or cannot do, by construction (these were not exercised by the benchmark):',
    '- **No signature checks.** It relays whatever the Pi answers. A narinfo the client does not trust (unsigned, or signed by a',
    '  key it lacks) reaches Nix, which rejects it and does not ask the upstream: the path is built or the command fails. The',
    '  proxy treats an untrusted narinfo as absent and asks the next origin.',
    '- **No NAR failover.** A narinfo from the Pi names the Pi\'s file (`nar/<filehash>.nar.xz`). If the Pi fails between the',
    '  narinfo and the NAR, the peer asks the upstream for that same file name, which the upstream (other compression, other',
    '  file hash) does not have: 404, and Nix fails that path. The proxy finds the upstream\'s narinfo with the same NarHash',
    '  and streams its NAR instead (also mid-stream, from an identical file).',
    '- **A hanging Pi costs a timeout per retry window.** `max_fails=1 fail_timeout=10s` takes the Pi out for 10 s after one',
    '  failure; then the next requests wait `proxy_read_timeout` (2 s here) again. A short read timeout also cuts a slow but',
    '  healthy Pi transfer; a long one makes every retry window cost that long.',
    '- **No narinfo cache** (no `proxy_cache` configured): each narinfo request is one request to the Pi.',
    '- It has no idea of which Pi is home (no mDNS), and no stats.',
  ].join('\n'),
};

const DOC = fileURLToPath(new URL('../../docs/benchmarks.md', import.meta.url));

const { values } = parseArgs({
  options: {
    only: { type: 'string' },
    quick: { type: 'boolean' },
    write: { type: 'boolean' },
    'no-write': { type: 'boolean' },
    // Case 17: which links and Nix clients (comma-separated; default all), a CPU profile, RSS a minute after load.
    links: { type: 'string' },
    clients: { type: 'string' },
    profile: { type: 'string' },
    settle: { type: 'boolean' },
    rounds: { type: 'string' },
  },
});
const only = new Set((values.only ?? '1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,hold').split(',').map((s) => (s.trim() === 'soak' ? '14' : s.trim())));
const quick = values.quick === true;
const write = values['no-write'] ? false : values.write === true || (values.only === undefined && !quick);

const started = performance.now();
const dir = await tempDir('bench');
let interrupted = false;
const onSignal = (signal: NodeJS.Signals) => {
  if (interrupted) return;
  interrupted = true;
  log(`${signal}: stopping every process the benchmark started`);
  void stopAll()
    .then(() => removeDir(dir))
    .finally(() => process.exit(130));
};
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);

const reports: CaseReport[] = [];
let failed = false;
try {
  const machine = await describeMachine();
  log(`machine: ${machine.map(([k, v]) => `${k}=${v}`).join('; ')}`);
  if (only.has('1') || only.has('2') || only.has('5')) {
    reports.push(
      ...(await runHome({
        dir: `${dir}/home`,
        narBytes: quick ? 64 * 2 ** 20 : 2 ** 30,
        throughputRounds: quick ? 2 : 5,
        loadRounds: quick ? 1 : 3,
        loadSeconds: quick ? 2 : 5,
        uncachedPerRound: quick ? 2000 : 10_000,
        uncachedSeconds: quick ? 1 : 3,
      })),
    );
  }
  if (only.has('3')) {
    reports.push(
      await runAway({
        dir: `${dir}/away`,
        paths: quick ? 20 : 200,
        rounds: quick ? 1 : 3,
        timeoutMs: quick ? 15_000 : 60_000,
      }),
    );
  }
  if (only.has('6')) {
    reports.push(await runPush({ dir: `${dir}/push`, smallLeaves: quick ? 15 : 195, largeLeaves: quick ? 1 : 4, largeBytes: 8 * 2 ** 20, rounds: quick ? 1 : 2 }));
  }
  if (only.has('7')) {
    const trees = quick ? ['/usr/lib/x86_64-linux-gnu/perl'] : ['/usr/lib/python3.11', '/usr/lib/x86_64-linux-gnu/perl', '/usr/share/perl'];
    reports.push(await runNarCompressed({ dir: `${dir}/nar`, trees, smallLeaves: quick ? 5 : 20, rounds: quick ? 1 : 3 }));
  }
  if (only.has('8')) {
    reports.push(
      await runFillBench({
        dir: `${dir}/fill`,
        leaves: quick ? [{ count: 3, size: 200_000 }] : [{ count: 20, size: 20_000 }, { count: 4, size: 2_000_000 }],
        latencyMs: 40,
        downBytesPerSec: 2 * 2 ** 20,
        rounds: quick ? 1 : 2,
      }),
    );
  }
  if (only.has('9') || only.has('10') || only.has('11')) {
    reports.push(
      ...(await runFaster({
        dir: `${dir}/faster`,
        shape: quick ? { levels: 3, width: 5, fanout: 2, bytes: 40_000 } : { levels: 10, width: 30, fanout: 3, bytes: 40_000 },
        homeRounds: quick ? 1 : 3,
        slowRounds: quick ? 1 : 3,
        slow: { delayMs: 25, bytesPerSecond: 2_500_000 },
        only,
      })),
    );
  }
  if (only.has('12')) reports.push(await runLeaving({ rounds: quick ? 1 : 3, commands: 3, gapsMs: [2000, 0] }));
  if (only.has('13')) {
    reports.push(await runSharing({ dir: `${dir}/sharing`, shape: quick ? { levels: 3, width: 5, fanout: 2, bytes: 40_000 } : { levels: 10, width: 30, fanout: 3, bytes: 40_000 }, rounds: quick ? 1 : 3 }));
  }
  if (only.has('hold')) {
    const { runHoldBench } = await import('./hold.js');
    reports.push(await runHoldBench({ dir: `${dir}/hold`, large: { count: quick ? 1 : 4, bytes: 16 * 2 ** 20 }, small: { count: quick ? 5 : 40, bytes: 40_000 }, rounds: quick ? 1 : 3 }));
  }
  if (only.has('14')) {
    // Imported here: the Nix client chroots are looked for only by the cases that use them.
    const { NIX_CLIENTS } = await import('../helpers/nix-clients.js');
    const suites = (process.env.NLC_SOAK_CLIENTS ?? 'sid').split(',').map((s) => s.trim());
    const clients = NIX_CLIENTS.filter((c) => suites.includes(c.suite));
    if (clients.length !== suites.length) throw new Error(`NLC_SOAK_CLIENTS=${suites.join(',')}: the Nix clients are ${NIX_CLIENTS.map((c) => c.suite).join(', ')}`);
    const durationMs = Number(process.env.NLC_SOAK_MS ?? (quick ? 60_000 : 30 * 60_000));
    reports.push(await runSoak({ durationMs, sampleEveryMs: 10_000, clients }));
  }
  if (only.has('15') || only.has('16')) {
    reports.push(...(await runS3Bench({ dir: `${dir}/s3`, smallLeaves: quick ? 15 : 296, largeLeaves: quick ? 1 : 4, largeBytes: 8 * 2 ** 20, rounds: quick ? 1 : 3, only })));
  }
  if (only.has('17')) {
    const list = (v: string | undefined) => v?.split(',').map((x) => x.trim()).filter(Boolean);
    reports.push(
      ...(await runEveryNix({
        dir: `${dir}/every-nix`,
        shape: quick ? { levels: 3, width: 5, fanout: 2, bytes: 40_000 } : { levels: 10, width: 30, fanout: 3, bytes: 40_000 },
        rounds: values.rounds ? Number(values.rounds) : quick ? 1 : 3,
        links: list(values.links),
        clients: list(values.clients),
        profile: values.profile === 'v8' || values.profile === 'perf' ? values.profile : undefined,
        settle: values.settle === true || values.only === undefined,
      })),
    );
  }
  if (only.has('4')) reports.push(PEER_NOTES);
  const minutes = (performance.now() - started) / 60_000;
  const order = (r: CaseReport) => r.title;
  reports.sort((a, b) => order(a).localeCompare(order(b), 'en', { numeric: true }));
  const doc = [
    '# Benchmarks',
    '',
    'Generated by `npm run bench` (`test/bench/main.ts`); do not edit by hand. Everything runs on 127.0.0.1: real nginx plays the',
    'Raspberry Pi and the upstream cache, real Nix is the client, and the "peer" is nginx configured as a fallback reverse proxy',
    '(what a user could set up instead of nix-lan-cache; config in `test/bench/peer.ts`).',
    '',
    '## Machine',
    '',
    table(['', ''], machine),
    '',
    `Whole run: ${minutes.toFixed(1)} minutes; load average at the end (1, 5, 15 min): ${loadavg().map((x) => x.toFixed(2)).join(', ')} on ${cpus().length} cores (other work shares the machine: compare sides within one run).`,
    '',
    '**Noise.** The machine has 2 cores, shared by the load generator and the servers under test (and by whatever else runs',
    'on the machine). Absolute numbers move by tens of percent between runs; the sides were run alternately in the same',
    'run, so compare medians and ratios within this page, not with other machines or other runs.',
    '',
    ...reports.flatMap((r) => [`## ${r.title}`, '', r.markdown, '']),
  ].join('\n');
  process.stdout.write(`\n${doc}\n`);
  if (write && values.only !== undefined) {
    // Some cases only: replace their sections in the existing page and keep the others.
    const stamp = `_Measured ${new Date().toISOString().replace('T', ' ').slice(0, 16)} UTC with \`npm run bench -- --only ${values.only} --write\` (the machine table above is from the last full run)._`;
    await writeFile(DOC, mergeSections(await readFile(DOC, 'utf8'), reports.map((r) => ({ ...r, markdown: `${stamp}\n\n${r.markdown}` }))));
    log(`updated ${reports.length} sections of ${DOC}`);
  } else if (write) {
    await writeFile(DOC, doc);
    log(`wrote ${DOC}`);
  }
} catch (err) {
  failed = true;
  log(`FAILED: ${err instanceof Error ? err.stack : String(err)}`);
} finally {
  await stopAll();
  await removeDir(dir).catch(() => {});
  log(`done in ${((performance.now() - started) / 1000).toFixed(0)} s`);
}
process.exit(failed ? 1 : 0);

/** Replaces (or appends, in numeric order) the `## title` sections of `doc` that `reports` have. */
function mergeSections(doc: string, fresh: CaseReport[]): string {
  const parts = doc.split(/^(?=## )/m);
  const head = parts.shift() ?? '';
  const sections = new Map(parts.map((p) => [/^## (.*)$/m.exec(p)![1]!.trim(), p]));
  for (const r of fresh) sections.set(r.title, `## ${r.title}\n\n${r.markdown}\n\n`);
  const machine = [...sections.entries()].filter(([t]) => !/^\d/.test(t));
  const cases = [...sections.entries()].filter(([t]) => /^\d/.test(t)).sort(([a], [b]) => a.localeCompare(b, 'en', { numeric: true }));
  return (head + [...machine, ...cases].map(([, p]) => p.replace(/\n*$/, '\n\n')).join('')).replace(/\n*$/, '\n');
}
