import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Nginx } from '../helpers/nginx.js';
import { generateKey, makeStaticCache, removeDir, substitute, type CacheKey } from '../helpers/nix.js';
import { startProxy, type ProxyProcess } from '../helpers/proxy.js';
import { buildLayeredClosure, type LayeredClosure, type LayeredShape } from '../helpers/closure.js';
import { startLink } from '../helpers/link.js';
import { readdir, readFile } from 'node:fs/promises';
import { log, median, peakRssMiB, ratio, summary, table, type CaseReport } from './util.js';

export interface FasterOptions {
  dir: string;
  shape: LayeredShape;
  homeRounds: number;
  slowRounds: number;
  slow: { delayMs: number; bytesPerSecond: number };
  only: Set<string>;
}

/** Proxy variants: the default (narinfo and NAR prefetch), narinfo prefetch only, no prefetching. */
const VARIANTS = {
  proxy: {},
  'proxy, no NAR prefetch': { cache: { narPrefetchBytes: 0 } },
  'proxy, no prefetch': { cache: { prefetchConcurrency: 0, narPrefetchBytes: 0 } },
} as const;
type Variant = keyof typeof VARIANTS;
const JOBS = [[], ['--max-jobs', '16']] as const;
const jobsName = (j: readonly string[]) => (j.length ? '`--max-jobs 16`' : 'defaults (`max-jobs = 1`)');

interface Setup {
  closure: LayeredClosure;
  /** Other closures of the same shape on the Pi, for the running proxy of case 9 to serve first. */
  warmups: LayeredClosure[];
  key: CacheKey;
  pi: Nginx;
  /** The Pi's access log with request times (`$msec $uri`). */
  piTimedLog: string;
  /** An empty upstream for the home case: every narinfo comes from the Pi. */
  empty: Nginx;
  /** The same cache as the Pi's, served by its own nginx, for the slow-link case. */
  upstream: Nginx;
  configs: Record<Variant, string>;
}

/**
 * CPU time (ms) of each thread of a process so far, summed by thread name:
 * the scheduler's nanosecond count (/proc/PID/task/TID/schedstat), since
 * /proc's user and system ticks are 10 ms each and round a busy pool of
 * threads doing a few milliseconds each down to nothing.
 */
async function threadCpu(pid: number): Promise<Map<string, number>> {
  const byName = new Map<string, number>();
  for (const tid of await readdir(`/proc/${pid}/task`)) {
    const ns = Number((await readFile(`/proc/${pid}/task/${tid}/schedstat`, 'utf8')).split(' ')[0]);
    const name = (await readFile(`/proc/${pid}/task/${tid}/comm`, 'utf8')).trim();
    byName.set(name, (byName.get(name) ?? 0) + ns / 1e6);
  }
  return byName;
}

async function setUp(o: FasterOptions): Promise<Setup> {
  const salt = `bench-faster-${Date.now()}`;
  log(`cases 7–9: building a ${o.shape.levels * o.shape.width + 1}-path closure (${o.shape.levels} levels of ${o.shape.width}, ${o.shape.bytes / 1000} kB of text each) with Nix, and an xz cache of it`);
  const closure = await buildLayeredClosure(salt, o.shape);
  const warmups = o.only.has('9') ? [await buildLayeredClosure(`${salt}-warm-1`, o.shape), await buildLayeredClosure(`${salt}-warm-2`, o.shape)] : [];
  const key = await generateKey(o.dir, 'pi.lan-1');
  const cacheDir = join(o.dir, 'pi-cache');
  const emptyDir = join(o.dir, 'empty-cache');
  await mkdir(emptyDir, { recursive: true });
  await writeFile(join(emptyDir, 'nix-cache-info'), 'StoreDir: /nix/store\n');
  await makeStaticCache(cacheDir, [closure.root, ...warmups.map((w) => w.root)], key, 'xz');
  const nginx = async (root: string, name: string) => {
    await mkdir(join(o.dir, name));
    // A second access log with times, for when Nix asked what (case 9's breakdown).
    return Nginx.start({ root, workDir: join(o.dir, name), extraHttp: `log_format timed '$msec $uri'; access_log ${join(o.dir, name, 'timed.log')} timed;` });
  };
  const configs = {} as Record<Variant, string>;
  for (const [i, [name, cfg]] of Object.entries(VARIANTS).entries()) {
    configs[name as Variant] = join(o.dir, `proxy-${i}.json`);
    await writeFile(configs[name as Variant], JSON.stringify(cfg));
  }
  return { closure, warmups, key, pi: await nginx(cacheDir, 'pi-nginx'), piTimedLog: join(o.dir, 'pi-nginx', 'timed.log'), empty: await nginx(emptyDir, 'empty-nginx'), upstream: await nginx(cacheDir, 'upstream-nginx'), configs };
}

interface Stats {
  narinfoPrefetch: { lookups: number; used: number };
  narPrefetch: { started: number; used: number };
  origins: Array<{ name: string }>;
}

let runs = 0;
/** Real Nix substitutes the closure into a fresh store with a fresh narinfo disk cache; returns seconds. */
async function nixRun(s: Setup, o: FasterOptions, substituter: string, jobs: readonly string[], paths = [s.closure.root], store?: string): Promise<number> {
  const n = ++runs;
  const st = store ?? join(o.dir, `client-${n}`);
  const res = await substitute(st, paths, substituter, { xdgCache: join(o.dir, `xdg-${n}`), trustedKeys: [s.key.publicKey], timeoutMs: 300_000, extraOptions: [...jobs] });
  if (res.code !== 0) throw new Error(`nix-store -r via ${substituter} failed (exit ${res.code}): ${res.stderr.slice(-400)}`);
  if (!store) await removeDir(st);
  await removeDir(join(o.dir, `xdg-${n}`));
  return res.ms / 1000;
}

async function proxyFor(s: Setup, variant: Variant, lan: string | undefined, upstream: string, level = 'info', profileDir?: string): Promise<ProxyProcess> {
  // BENCH_CPU_PROF=DIR: every proxy writes a V8 CPU profile there (node --cpu-prof), for the profiles docs/benchmarks.md cites.
  const prof = profileDir ?? process.env.BENCH_CPU_PROF;
  const env = prof ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${prof}` } : undefined;
  return startProxy(['--no-mdns', '--log-level', level, '--config', s.configs[variant], ...(lan ? ['--lan', lan] : []), '--upstream', upstream, '--trusted-public-key', s.key.publicKey], env ? { env } : {});
}

/** Waits (bounded) until the proxy's NAR prefetches have settled: nothing running or waiting. */
async function settle(p: ProxyProcess): Promise<{ reservedBytes: number }> {
  for (let i = 0; i < 200; i++) {
    const h = (await (await fetch(`${p.url}/_/health`)).json()) as { narPrefetch: { running: number; queued: number; reservedBytes: number } };
    if (h.narPrefetch.running === 0 && h.narPrefetch.queued === 0) return h.narPrefetch;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('NAR prefetches did not settle within 10 s');
}

async function proxyStats(p: ProxyProcess): Promise<Stats> {
  return (await (await fetch(`${p.url}/_/stats`)).json()) as Stats;
}

type Cells = Map<string, number[]>;
const push = (cells: Cells, k: string, v: number) => cells.set(k, [...(cells.get(k) ?? []), v]);

/** CPU time (user + system, ms) of a process's child processes (the proxy's `xz` processes), summed. */
async function childrenCpu(pid: number): Promise<number> {
  let ms = 0;
  for (const tid of await readdir(`/proc/${pid}/task`)) {
    const kids = (await readFile(`/proc/${pid}/task/${tid}/children`, 'utf8')).trim().split(' ').filter(Boolean);
    for (const kid of kids) for (const ms1 of (await threadCpu(Number(kid)).catch(() => new Map<string, number>())).values()) ms += ms1;
  }
  return ms;
}

/**
 * Where the time goes in one run each way (not timed with the others: the
 * proxy logs every request at debug level here): when Nix's narinfo walk and
 * its NAR downloads start and end, direct (the Pi's access log) and through
 * the proxy (its request log), and the CPU time of every process: Nix's
 * (bash's `times` after it), the proxy's threads and its `xz` processes.
 */
async function breakdown(s: Setup, o: FasterOptions): Promise<string> {
  type At = { t: number; uri: string };
  const phases = (xs: At[], t0: number) => {
    const span = (ys: At[]) => (ys.length ? `${(ys[0]!.t - t0).toFixed(0)}–${(ys.at(-1)!.t - t0).toFixed(0)} ms` : '–');
    return `narinfos ${span(xs.filter((x) => x.uri.endsWith('.narinfo')))}, NARs ${span(xs.filter((x) => x.uri.startsWith('/nar/')))}`;
  };
  await writeFile(s.piTimedLog, '');
  const t0 = Date.now();
  const direct = await nixTimed(s, o, s.pi.url);
  const piLog = (await readFile(s.piTimedLog, 'utf8')).trim().split('\n').map((l) => ({ t: Number(l.split(' ')[0]) * 1000, uri: l.split(' ')[1]! }));
  const p = await proxyFor(s, 'proxy', s.pi.url, s.empty.url, 'debug');
  try {
    const before = await threadCpu(p.child.pid!);
    const from = p.logs.length;
    const t1 = Date.now();
    const via = await nixTimed(s, o, p.url);
    const after = await threadCpu(p.child.pid!);
    const xz = await childrenCpu(p.child.pid!); // a fresh proxy: its xz processes started with this run
    const reqs = p.logs.slice(from).filter((l) => l.msg === 'request').map((l) => ({ t: l.time as number, uri: String(l.url) }));
    const cpu = (match: (name: string) => boolean) => Math.round([...after].filter(([n]) => match(n)).reduce((a, [n, ms]) => a + ms - (before.get(n) ?? 0), 0));
    const proxyAll = cpu(() => true);
    const total = Math.round(via.cpuMs + proxyAll + xz);
    return (
      `One more run each way, Nix at its defaults, times from Nix's start: **direct** (${direct.s.toFixed(2)} s): ${phases(piLog, t0)}; ` +
      `**through the proxy** (${via.s.toFixed(2)} s, logging every request): ${phases(reqs, t1)}. ` +
      `CPU time (user + system) of that run: **direct**, Nix ${direct.cpuMs} ms (it decodes the xz itself); **through the proxy**, Nix ${via.cpuMs} ms, the proxy ${proxyAll} ms (${(proxyAll / s.closure.paths.length).toFixed(1)} ms per path; main thread ${cpu((n) => n === 'MainThread')}, libuv's threadpool with the Ed25519 checks ${cpu((n) => n === 'libuv-worker')}, V8's helper threads ${cpu((n) => n.startsWith('V8'))}), its \`xz\` processes ${Math.round(xz)} ms: ${total} ms in all, ${(total / direct.cpuMs).toFixed(1)}× Nix's alone, on 2 cores. ` +
      (await profiled(s, o))
    );
  } finally {
    await p.stop();
  }
}

/** nixRun at Nix's defaults, with Nix's CPU time (bash's `times` for its children). */
async function nixTimed(s: Setup, o: FasterOptions, substituter: string): Promise<{ s: number; cpuMs: number }> {
  const n = ++runs;
  const st = join(o.dir, `client-${n}`);
  const res = await substitute(st, [s.closure.root], substituter, { xdgCache: join(o.dir, `xdg-${n}`), trustedKeys: [s.key.publicKey], timeoutMs: 300_000, wrapper: ['bash', '-c', '"$@"; rc=$?; times >&2; exit $rc', 'nix-timed'] });
  if (res.code !== 0) throw new Error(`nix-store -r via ${substituter} failed (exit ${res.code}): ${res.stderr.slice(-400)}`);
  await removeDir(st);
  await removeDir(join(o.dir, `xdg-${n}`));
  // `times`: the shell's user and system time, then its children's, as 0m0.370s 0m0.030s.
  const m = /(\d+)m([\d.]+)s (\d+)m([\d.]+)s\s*$/.exec(res.stderr.trim());
  const cpuMs = m ? Math.round((Number(m[1]) * 60 + Number(m[2]) + Number(m[3]) * 60 + Number(m[4])) * 1000) : NaN;
  return { s: res.ms / 1000, cpuMs };
}

/** One more run through the proxy (info logging) with V8's CPU profiler on its main thread; a summary of where the run's samples went. */
async function profiled(s: Setup, o: FasterOptions): Promise<string> {
  const dir = join(o.dir, `cpu-profile-${Date.now()}`);
  const spawned = Date.now();
  const p = await proxyFor(s, 'proxy', s.pi.url, s.empty.url, 'info', dir);
  let window: [number, number];
  try {
    const from = Date.now() - spawned;
    const t = await nixRun(s, o, p.url, []);
    window = [from, from + t * 1000];
  } finally {
    await p.stop();
  }
  // node --cpu-prof names a thread's profile CPU.<date>.<time>.<pid>.<thread>.<n>.cpuprofile; the main thread is 0.
  const file = (await readdir(dir)).find((f) => /\.\d+\.0\.\d+\.cpuprofile$/.test(f));
  if (!file) return 'No CPU profile was written.';
  type Node = { id: number; callFrame: { functionName: string; url: string }; children?: number[] };
  const prof = JSON.parse(await readFile(join(dir, file), 'utf8')) as { nodes: Node[]; samples: number[]; timeDeltas: number[] };
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  // Self time by kind, over the samples taken while Nix ran (the profile starts with the process).
  const kinds = new Map<string, number>();
  let at = 0;
  let total = 0;
  const kindOf = (id: number): string => {
    const self = byId.get(id)!.callFrame;
    if (self.functionName === '(idle)') return 'idle';
    if (self.functionName === '(garbage collector)') return 'garbage collection';
    for (let x: number | undefined = id; x !== undefined; x = parent.get(x)) {
      const f = byId.get(x)!.callFrame;
      if (/dist\/(protocol\/signing|server\/narinfo-resolver|origins\/http-origin)/.test(f.url) || f.functionName === 'verifyOneShot') return 'narinfo lookups (undici request to the Pi, parse, Ed25519 check)';
      if (/dist\/nar\//.test(f.url)) return 'NAR path (fetch ahead, pipes to and from xz, hash, write to Nix)';
      if (/node_modules\/(fastify|light-my-request|find-my-way|avvio)/.test(f.url)) return 'fastify request handling';
    }
    if (/^(writev|writeLatin1String|writeUtf8String|writeBuffer)$/.test(self.functionName)) return 'socket writes';
    return 'other (Node, undici and stream internals, the program)';
  };
  prof.samples.forEach((id, i) => {
    at += (prof.timeDeltas[i] ?? 0) / 1000;
    if (at < window[0] || at > window[1]) return;
    const us = prof.timeDeltas[i] ?? 0;
    total += us;
    const k = kindOf(id);
    kinds.set(k, (kinds.get(k) ?? 0) + us);
  });
  const parts = [...kinds].sort((a, b) => b[1] - a[1]).map(([k, us]) => `${k} ${((us / total) * 100).toFixed(0)}%`);
  return `A V8 CPU profile of the proxy's main thread in another such run (info logging; samples while Nix ran, by what they were in): ${parts.join(', ')}.`;
}

/**
 * One side-by-side comparison: for each job setting and round, Nix direct,
 * then each proxy variant (a fresh proxy per run: nothing learnt before).
 */
async function compare(s: Setup, o: FasterOptions, what: string, rounds: number, direct: string, lan: string | undefined, upstream: string, rss: Cells, prefetch: Array<{ lookups: number; used: number }>, running = false): Promise<Cells> {
  const cells: Cells = new Map();
  for (let r = 0; r < rounds; r++) {
    for (const jobs of JOBS) {
      const t = await nixRun(s, o, direct, jobs);
      push(cells, `Nix direct|${jobs.length}`, t);
      log(`  ${what} round ${r + 1} ${jobsName(jobs)}: Nix direct ${t.toFixed(2)} s`);
      for (const v of Object.keys(VARIANTS) as Variant[]) {
        const p = await proxyFor(s, v, lan, upstream);
        try {
          const tp = await nixRun(s, o, p.url, jobs);
          push(cells, `${v}|${jobs.length}`, tp);
          if (v === 'proxy') prefetch.push((await proxyStats(p)).narinfoPrefetch);
          push(rss, v, await peakRssMiB(p.child.pid!));
          log(`  ${what} round ${r + 1} ${jobsName(jobs)}: ${v} ${tp.toFixed(2)} s`);
        } finally {
          await p.stop();
        }
      }
      if (running) {
        // The proxy as a service runs: started long before, it has served other closures (none of this one's paths).
        const p = await proxyFor(s, 'proxy', lan, upstream);
        try {
          for (const w of s.warmups) await nixRun(s, o, p.url, jobs, [w.root]);
          const tp = await nixRun(s, o, p.url, jobs);
          push(cells, `${RUNNING}|${jobs.length}`, tp);
          push(rss, RUNNING, await peakRssMiB(p.child.pid!));
          log(`  ${what} round ${r + 1} ${jobsName(jobs)}: ${RUNNING} ${tp.toFixed(2)} s`);
        } finally {
          await p.stop();
        }
      }
    }
  }
  return cells;
}

/** Case 9's side for the proxy as it runs as a service: warmed by two other closures, nothing of this one cached. */
const RUNNING = 'proxy, running (served two other closures first)';

function comparison(cells: Cells, directName: string): string {
  const rows: string[][] = [];
  for (const jobs of JOBS) {
    const direct = cells.get(`Nix direct|${jobs.length}`) ?? [];
    rows.push([jobsName(jobs), directName, summary(direct), '1.00×']);
    for (const v of [...Object.keys(VARIANTS), RUNNING]) {
      if (!cells.has(`${v}|${jobs.length}`)) continue;
      const xs = cells.get(`${v}|${jobs.length}`) ?? [];
      rows.push([jobsName(jobs), v, summary(xs), ratio(xs, direct)]);
    }
  }
  return table(['Nix', 'side', 'seconds, median (min–max)', 'vs Nix alone'], rows);
}

const goal = (cells: Cells, limit: number, side = 'proxy') =>
  JOBS.map((j) => {
    const r = median(cells.get(`${side}|${j.length}`)!) / median(cells.get(`Nix direct|${j.length}`)!);
    return `${jobsName(j)}: ${r.toFixed(2)}× — **${r <= limit ? 'met' : `NOT met, by ${(r - limit).toFixed(2)}×`}**`;
  }).join('; ');

export async function runFaster(o: FasterOptions): Promise<CaseReport[]> {
  await mkdir(o.dir, { recursive: true });
  const s = await setUp(o);
  const reports: CaseReport[] = [];
  const rss: Cells = new Map();
  const paths = s.closure.paths.length;
  const shape = `${paths} paths: a root over ${o.shape.levels} levels of ${o.shape.width} paths, each referring to ${o.shape.fanout} of the level below (Nix learns each level from the narinfos of the one above), ${o.shape.bytes / 1000} kB of base64 text per path, built by real Nix and put in an xz cache by \`nix copy ?compression=xz\`, signed`;
  const prefetchSeen: Array<{ lookups: number; used: number }> = [];
  try {
    if (o.only.has('9')) {
      log(`case 9: home, ${o.homeRounds} rounds`);
      const cells = await compare(s, o, 'home', o.homeRounds, s.pi.url, s.pi.url, s.empty.url, rss, prefetchSeen, true);
      const wasted = prefetchSeen.map((p) => p.lookups - p.used);
      const where = await breakdown(s, o);
      reports.push({
        title: `9. Home: ${paths}-path closure, Nix direct from the Pi vs through the proxy`,
        markdown: [
          `The closure: ${shape}. The Pi is nginx on loopback. Each run is \`nix-store --store FRESH_DIR -r ROOT\` with a fresh narinfo disk cache; **Nix direct**: \`substituters = PI\`; the proxy sides: a fresh \`nix-lan-cache serve --lan PI --upstream EMPTY\` per run (startup not counted, nothing cached), and **${RUNNING}**: the proxy as it runs as a service, started for the round and used first to substitute two other closures of the same shape from the same Pi (other paths: nothing of this closure cached, the same work to do), so its code is what V8 has optimised by then, its \`xz\` processes run and its connections to the Pi are open. ${o.homeRounds} rounds, sides alternating.`,
          '',
          comparison(cells, 'Nix direct from the Pi'),
          '',
          `Goal: through the proxy ≤ 1.0× direct. A fresh proxy: ${goal(cells, 1.0)}. The proxy running: ${goal(cells, 1.0, RUNNING)}.`,
          '',
          `Prefetch accounting of the default proxy runs: ${summary(prefetchSeen.map((p) => p.lookups), 0)} narinfos prefetched per run, ${summary(wasted, 0)} of them never asked for by Nix.`,
          '',
          `**What bounds it.** ${where} Nix 2.8 first walks the closure's narinfos level by level, then fetches and unpacks the NARs one at a time (with \`max-jobs = 1\`). Direct, about half of Nix's CPU is its own xz decoding (xz decodes this base64 text at about 25 MB/s). Through the proxy, NAR prefetch fetches each NAR as soon as Nix has its narinfo and long-lived \`xz\` processes decode it beside the proxy's main thread (\`nar/xz-pool.ts\`; two on this machine), so Nix takes uncompressed NARs from memory and its own CPU halves (above). The work does not go away, though: the decoding moved from Nix into the \`xz\` processes, and the proxy adds its own for every path: a narinfo request to the Pi, a parse, an Ed25519 check (on libuv's threadpool) and an answer; a NAR request, the pipes to and from \`xz\`, the hash and the answer. Per path that is the proxy's CPU above, most of it JavaScript in Node's HTTP server, undici and fastify, which a fresh process runs before V8 has optimised it; the running proxy does the same work on optimised code (its row above; the CPU here and the profile are of fresh proxies). So the run through the proxy needs more CPU than Nix alone (the totals above) on the same two cores, and can at best spread it over both. Most of what is lost is in the narinfo walk (compare the phases): Nix waits on each level, and the proxy's main thread answers a level's requests one after the other, fetching and checking each, where nginx serves a file in microseconds. With \`--max-jobs 16\` Nix direct already decodes on both cores at once, with no proxy beside it.`,
        ].join('\n'),
      });
    }
    if (o.only.has('10')) {
      const relay = await startLink({ target: { host: '127.0.0.1', port: s.upstream.port }, latencyMs: o.slow.delayMs, downBytesPerSec: o.slow.bytesPerSecond, upBytesPerSec: o.slow.bytesPerSecond });
      try {
        log(`case 10: slow link (${o.slow.delayMs} ms each way, ${o.slow.bytesPerSecond / 1e6} MB/s each way), ${o.slowRounds} rounds`);
        const cells = await compare(s, o, 'slow link', o.slowRounds, relay.url, undefined, relay.url, rss, []);
        reports.push({
          title: `10. Slow link: the same closure from an upstream ${2 * o.slow.delayMs} ms away, Nix alone vs through the proxy`,
          markdown: [
            `The same closure (${paths} paths, xz) on an upstream nginx behind \`test/helpers/link.ts\`, a TCP relay on loopback that delays every byte ${o.slow.delayMs} ms each way (a new connection pays one more round trip for its handshake) and limits each direction to ${o.slow.bytesPerSecond / 1e6} MB/s, shared by all connections. No Pi. **Nix alone**: \`substituters = RELAY\`; the proxy sides: \`nix-lan-cache serve --upstream RELAY\`, fresh per run. ${o.slowRounds} rounds, sides alternating.`,
            '',
            comparison(cells, 'Nix alone, through the relay'),
            '',
            `Goal: through the proxy ≤ 0.6× Nix alone. ${goal(cells, 0.6)}.`,
            '',
            `**What bounds it.** Nix alone, with \`max-jobs = 1\`, fetches the NARs one after the other, each paying the link's round trip (${2 * o.slow.delayMs} ms) and its transfer time: about ${((median(cells.get('Nix direct|0')!) / paths) * 1000).toFixed(0)} ms per path here, and narinfo prefetching alone saves only the narinfo walk (the "no NAR prefetch" rows). NAR prefetch starts each NAR's download the moment Nix has its narinfo, 8 at a time (\`cache.narPrefetchConcurrency\`), so the link is kept full while Nix walks the closure and Nix then takes the NARs from memory on loopback: the run is bound by the link's bandwidth, not its round trips. With \`--max-jobs 16\` Nix alone already fetches 16 NARs at once and is nearly bound by the same bandwidth: ${o.shape.levels * o.shape.width + 1} NARs of ~30 kB (xz) are ~9 MB, ${(9e6 / o.slow.bytesPerSecond).toFixed(1)} s at ${o.slow.bytesPerSecond / 1e6} MB/s whoever asks for them, so 0.6× of Nix alone (less than the time the bytes take to cross the link) cannot be reached on this link without sending fewer bytes; the proxy wins the narinfo walk and the round trips Nix leaves between its downloads.`,
          ].join('\n'),
        });
      } finally {
        await relay.close();
      }
    }
    if (o.only.has('11')) reports.push(await wrongGuesses(s, o, rss));
  } finally {
    await Promise.all([s.pi.stop(), s.empty.stop(), s.upstream.stop()]);
  }
  if (rss.size) {
    const all = [...rss.values()].flat();
    reports.push({
      title: '11b. Memory with prefetching (peak RSS)',
      markdown: [
        'Peak RSS (VmHWM) of each proxy of cases 9–11 at the end of its run, by side:',
        '',
        table(['side', 'peak RSS, median (min–max)', 'runs'], [...rss].map(([v, xs]) => [v, summary(xs, 0, ' MiB'), String(xs.length)])),
        '',
        `Goal: under 150 MB (143 MiB) in every run: **${Math.max(...all) < 143 ? 'met' : `NOT met (highest ${Math.max(...all).toFixed(0)} MiB)`}**.`,
        '',
        `Where it goes. The proxies here run as the Nix package's wrapper and the user unit run them (test/helpers/proxy.ts): with \`MALLOC_ARENA_MAX=2\` (with glibc's default every thread that allocates keeps an arena of its own; ~20 MiB more in an earlier check) and \`NODE_OPTIONS=--max-semi-space-size=4\` (V8's young generation otherwise grows to 16 MiB semi-spaces under a closure's burst of requests: case 9's proxy peaked at 135–149 MiB without it and 121–129 MiB with it, at the same speed, in a separate check of 3 runs each; docs/dependencies.md). Node 24 itself with the proxy's modules loaded is ~80 MiB before the first request. Small xz files are decoded in \`xz\` processes outside the proxy (about 2 MiB each, not counted here: xz touches only as much of its 8 MiB dictionary as a small file uses). NAR prefetch holds decoded NARs up to its byte budget (\`cache.narPrefetchBytes\`, 32 MiB; this whole closure is 12 MB) (${(() => {
          const a = rss.get('proxy');
          const b = rss.get('proxy, no NAR prefetch');
          return a && b ? `the rows with and without it differ by ${(median(a) - median(b)).toFixed(0)} MiB at the median` : 'compare the rows with and without it';
        })()}). Narinfo prefetching holds only its queue of store hashes and answers in the byte-bounded narinfo cache (8 MiB). The running proxy (case 9's last row: three closures back to back) peaks higher than a fresh one: each closure of this size leaves ~50 MB of dead Buffers outside V8's heap (pipe reads from \`xz\`, the compressed files gathered whole, the decoded copies), which V8 frees only at a garbage collection, and it starts a full one for memory outside its heap only once ~64 MB of it has piled up. In a separate check, forcing a collection after each closure (\`--expose-gc\`) kept such a proxy at 123–125 MiB over three closures, against 143–158 MiB without. To bound the proxy tighter: \`cache.narPrefetchBytes\` lower, or 0 (off).`,
      ].join('\n'),
    });
  }
  return reports;
}

/**
 * Case 9: the client already has everything but the root, so every
 * prefetched narinfo is one Nix never asks for. Counted at the Pi's nginx.
 */
async function wrongGuesses(s: Setup, o: FasterOptions, rss: Cells): Promise<CaseReport> {
  log('case 11: prefetching when it guesses wrong');
  const rows: string[][] = [];
  for (const v of ['proxy', 'proxy, no prefetch'] as Variant[]) {
    const store = join(o.dir, `wrong-${v.replace(/\W+/g, '-')}`);
    // Everything below the root is already in the client's store (fetched straight from the Pi).
    const below = s.closure.paths.filter((p) => p !== s.closure.root);
    await nixRun(s, o, s.pi.url, ['--max-jobs', '16'], below, store);
    const p = await proxyFor(s, v, s.pi.url, s.empty.url);
    try {
      const before = (await s.pi.log()).length;
      const t = await nixRun(s, o, p.url, [], [s.closure.root], store);
      // Prefetches run after Nix's answer: give them time to finish before counting.
      let last = -1;
      for (let i = 0; i < 50; i++) {
        const n = (await proxyStats(p)).narinfoPrefetch.lookups;
        if (n === last) break;
        last = n;
        await new Promise((r) => setTimeout(r, 200));
      }
      const st = await proxyStats(p);
      const narinfos = (await s.pi.log()).slice(before).filter((e) => e.uri.endsWith('.narinfo'));
      const bytes = narinfos.reduce((a, e) => a + e.bytes, 0);
      push(rss, v, await peakRssMiB(p.child.pid!));
      rows.push([v, t.toFixed(2), String(narinfos.length), `${(bytes / 1024).toFixed(1)} KiB`, String(st.narinfoPrefetch.lookups), String(st.narinfoPrefetch.used)]);
      log(`  ${v}: ${t.toFixed(2)} s, ${narinfos.length} narinfo requests at the Pi, ${bytes} bytes`);
    } finally {
      await p.stop();
      await removeDir(store);
    }
  }
  // NARs: Nix asks every narinfo of the closure and wants no NAR (`--dry-run`): every NAR fetched ahead is a wrong guess.
  const narRows: string[][] = [];
  for (const v of ['proxy', 'proxy, no NAR prefetch'] as Variant[]) {
    const p = await proxyFor(s, v, s.pi.url, s.empty.url);
    try {
      const before = (await s.pi.log()).length;
      const t = await nixRun(s, o, p.url, ['--dry-run']);
      const settled = await settle(p);
      const nars = (await s.pi.log()).slice(before).filter((e) => e.uri.startsWith('/nar/'));
      const st = await proxyStats(p);
      push(rss, v, await peakRssMiB(p.child.pid!));
      narRows.push([v, t.toFixed(2), String(nars.length), `${(nars.reduce((a, e) => a + e.bytes, 0) / 2 ** 20).toFixed(1)} MiB`, String(st.narPrefetch.started), String(st.narPrefetch.used), `${(settled.reservedBytes / 2 ** 20).toFixed(1)} MiB`]);
      log(`  ${v} --dry-run: ${t.toFixed(2)} s, ${nars.length} NAR requests at the Pi`);
    } finally {
      await p.stop();
    }
  }
  return {
    title: '11. What prefetching costs when it guesses wrong',
    markdown: [
      `The client store already holds everything below the root (${s.closure.paths.length - 1} paths); Nix asks only for the root's narinfo and NAR. Every narinfo the proxy fetches beyond that is a wrong guess. Counted in the Pi's nginx access log (requests and body bytes) and the proxy's \`narinfoPrefetch\` stats. One run each, Nix at its defaults.`,
      '',
      table(['side', 'seconds', 'narinfo requests at the Pi', 'narinfo bytes from the Pi', 'prefetched', 'used by Nix'], rows),
      '',
      `A wrong guess costs one narinfo per reference of each path Nix asks for (here the root's ${o.shape.width}).`,
      '',
      `**NARs.** \`nix-store -r ROOT --dry-run\` into an empty store: Nix asks for every narinfo of the closure (${s.closure.paths.length}) and for no NAR, so every NAR fetched ahead is a wrong guess. Counted at the Pi's nginx and in the proxy's \`narPrefetch\` stats; "held" is what the proxy still holds in memory once the fetches settled.`,
      '',
      table(['side', 'seconds', 'NAR requests at the Pi', 'NAR bytes from the Pi', 'fetched ahead', 'used by Nix', 'held'], narRows),
      '',
      `The worst case costs the closure's NARs once over the LAN (the Pi's files, xz here), never more than the byte budget (32 MiB of uncompressed NAR by default) in memory at once, and the memory for 30 s: a NAR Nix does not come for is dropped after that, counted in \`narPrefetch.wasted\`. On a metered or slow link, \`cache.narPrefetchBytes = 0\` turns it off.`,
    ].join('\n'),
  };
}
