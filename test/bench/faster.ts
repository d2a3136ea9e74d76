import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Nginx } from '../helpers/nginx.js';
import { generateKey, makeStaticCache, removeDir, substitute, type CacheKey } from '../helpers/nix.js';
import { startProxy, type ProxyProcess } from '../helpers/proxy.js';
import { buildLayeredClosure, type LayeredClosure, type LayeredShape } from './closure.js';
import { startSlowLink } from './slow-relay.js';
import { log, median, peakRssMiB, ratio, summary, table, type CaseReport } from './util.js';

export interface FasterOptions {
  dir: string;
  shape: LayeredShape;
  homeRounds: number;
  slowRounds: number;
  slow: { delayMs: number; bytesPerSecond: number };
  only: Set<string>;
}

/** Proxy variants: the default, prefetching off, two levels ahead. */
const VARIANTS = {
  proxy: {},
  'proxy, no prefetch': { cache: { prefetchConcurrency: 0 } },
  'proxy, 2 levels ahead': { cache: { prefetchDepth: 2 } },
} as const;
type Variant = keyof typeof VARIANTS;
const JOBS = [[], ['--max-jobs', '16']] as const;
const jobsName = (j: readonly string[]) => (j.length ? '`--max-jobs 16`' : 'defaults (`max-jobs = 1`)');

interface Setup {
  closure: LayeredClosure;
  key: CacheKey;
  pi: Nginx;
  /** An empty upstream for the home case: every narinfo comes from the Pi. */
  empty: Nginx;
  /** The same cache as the Pi's, served by its own nginx, for the slow-link case. */
  upstream: Nginx;
  configs: Record<Variant, string>;
}

async function setUp(o: FasterOptions): Promise<Setup> {
  const salt = `bench-faster-${Date.now()}`;
  log(`cases 7–9: building a ${o.shape.levels * o.shape.width + 1}-path closure (${o.shape.levels} levels of ${o.shape.width}, ${o.shape.bytes / 1000} kB of text each) with Nix, and an xz cache of it`);
  const closure = await buildLayeredClosure(salt, o.shape);
  const key = await generateKey(o.dir, 'pi.lan-1');
  const cacheDir = join(o.dir, 'pi-cache');
  const emptyDir = join(o.dir, 'empty-cache');
  await mkdir(emptyDir, { recursive: true });
  await writeFile(join(emptyDir, 'nix-cache-info'), 'StoreDir: /nix/store\n');
  await makeStaticCache(cacheDir, [closure.root], key, 'xz');
  const nginx = async (root: string, name: string) => {
    await mkdir(join(o.dir, name));
    return Nginx.start({ root, workDir: join(o.dir, name) });
  };
  const configs = {} as Record<Variant, string>;
  for (const [i, [name, cfg]] of Object.entries(VARIANTS).entries()) {
    configs[name as Variant] = join(o.dir, `proxy-${i}.json`);
    await writeFile(configs[name as Variant], JSON.stringify(cfg));
  }
  return { closure, key, pi: await nginx(cacheDir, 'pi-nginx'), empty: await nginx(emptyDir, 'empty-nginx'), upstream: await nginx(cacheDir, 'upstream-nginx'), configs };
}

interface Stats {
  narinfoPrefetch: { lookups: number; used: number };
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

async function proxyFor(s: Setup, variant: Variant, lan: string | undefined, upstream: string, level = 'info'): Promise<ProxyProcess> {
  // BENCH_CPU_PROF=DIR: every proxy writes a V8 CPU profile there (node --cpu-prof), for the profiles docs/benchmarks.md cites.
  const prof = process.env.BENCH_CPU_PROF;
  const env = prof ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${prof}` } : undefined;
  return startProxy(['--no-mdns', '--log-level', level, '--config', s.configs[variant], ...(lan ? ['--lan', lan] : []), '--upstream', upstream, '--trusted-public-key', s.key.publicKey], env ? { env } : {});
}

async function proxyStats(p: ProxyProcess): Promise<Stats> {
  return (await (await fetch(`${p.url}/_/stats`)).json()) as Stats;
}

type Cells = Map<string, number[]>;
const push = (cells: Cells, k: string, v: number) => cells.set(k, [...(cells.get(k) ?? []), v]);

/**
 * Where the proxy's time goes in one run (not timed with the others: debug
 * logging costs): when the narinfo phase and the NAR phase start and end,
 * and the time the proxy spent answering each kind of request.
 */
async function breakdown(s: Setup, o: FasterOptions): Promise<string> {
  const p = await proxyFor(s, 'proxy', s.pi.url, s.empty.url, 'debug');
  try {
    const t = await nixRun(s, o, p.url, []);
    const reqs = p.logs.filter((l) => l.msg === 'request');
    const phase = (re: RegExp) => {
      const xs = reqs.filter((l) => re.test(String(l.url)));
      const span = xs.length ? (xs.at(-1)!.time as number) - (xs[0]!.time as number) : 0;
      const busy = xs.reduce((a, l) => a + (l.ms as number), 0);
      return `${xs.length} requests over ${(span / 1000).toFixed(2)} s, ${(busy / xs.length).toFixed(1)} ms each in the proxy on average`;
    };
    return `One more run through the proxy with debug request logs (Nix at its defaults, ${t.toFixed(2)} s with the logging): narinfo phase ${phase(/\.narinfo$/)}; NAR phase ${phase(/^\/nar\//)}.`;
  } finally {
    await p.stop();
  }
}

/**
 * One side-by-side comparison: for each job setting and round, Nix direct,
 * then each proxy variant (a fresh proxy per run: nothing learnt before).
 */
async function compare(s: Setup, o: FasterOptions, what: string, rounds: number, direct: string, lan: string | undefined, upstream: string, rss: Cells, prefetch: Array<{ lookups: number; used: number }>): Promise<Cells> {
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
    }
  }
  return cells;
}

function comparison(cells: Cells, directName: string): string {
  const rows: string[][] = [];
  for (const jobs of JOBS) {
    const direct = cells.get(`Nix direct|${jobs.length}`) ?? [];
    rows.push([jobsName(jobs), directName, summary(direct), '1.00×']);
    for (const v of Object.keys(VARIANTS)) {
      const xs = cells.get(`${v}|${jobs.length}`) ?? [];
      rows.push([jobsName(jobs), v, summary(xs), ratio(xs, direct)]);
    }
  }
  return table(['Nix', 'side', 'seconds, median (min–max)', 'vs Nix alone'], rows);
}

const goal = (cells: Cells, limit: number) =>
  JOBS.map((j) => {
    const r = median(cells.get(`proxy|${j.length}`)!) / median(cells.get(`Nix direct|${j.length}`)!);
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
      const cells = await compare(s, o, 'home', o.homeRounds, s.pi.url, s.pi.url, s.empty.url, rss, prefetchSeen);
      const wasted = prefetchSeen.map((p) => p.lookups - p.used);
      const where = await breakdown(s, o);
      reports.push({
        title: `9. Home: ${paths}-path closure, Nix direct from the Pi vs through the proxy`,
        markdown: [
          `The closure: ${shape}. The Pi is nginx on loopback. Each run is \`nix-store --store FRESH_DIR -r ROOT\` with a fresh narinfo disk cache; **Nix direct**: \`substituters = PI\`; the proxy sides: a fresh \`nix-lan-cache serve --lan PI --upstream EMPTY\` per run (startup not counted, nothing cached). ${o.homeRounds} rounds, sides alternating.`,
          '',
          comparison(cells, 'Nix direct from the Pi'),
          '',
          `Goal: through the proxy ≤ 1.0× direct. ${goal(cells, 1.0)}.`,
          '',
          `Prefetch accounting of the default proxy runs: ${summary(prefetchSeen.map((p) => p.lookups), 0)} narinfos prefetched per run, ${summary(wasted, 0)} of them never asked for by Nix.`,
          '',
          `**What bounds it.** ${where} Nix 2.8 first walks the closure's narinfos level by level, then fetches, decompresses and unpacks the NARs one at a time (with \`max-jobs = 1\`). Through the proxy every NAR takes one more hop (Nix → proxy → Pi → proxy → Nix instead of Nix → Pi), paid ${paths} times in a row; narinfo prefetching does not help there, and at home it wins little on the narinfo walk either: the Pi answers in well under a millisecond, so the prefetch of a level starts barely before Nix asks for it, and the walk is bound by the proxy's CPU per narinfo (fetch, parse, Ed25519 check, serialise: about 1 ms on this loaded machine). A CPU profile of the proxy during these runs (\`BENCH_CPU_PROF=DIR npm run bench -- --only 7\`, summed over the proxies of one run) shows no hot spot in the proxy's own code: about half the samples idle, then socket writes (\`writev\` of responses to Nix ~6%, undici writing requests to the Pi ~4%), undici and fastify request handling (~5% each), module loading at start-up (~3%, not in the timings), Ed25519 checks (~2%), garbage collection (~2%). Connections are reused both ways (checked with \`ss\` during a run: Nix 2.8 keeps up to 25 connections to the proxy for the whole command; the proxy keeps ~30 to the Pi and reuses them across commands). What would beat Nix direct is serving NARs from memory fetched and decompressed ahead of Nix (NAR prefetch, planned on the new NAR path: docs/architecture.md).`,
        ].join('\n'),
      });
    }
    if (o.only.has('10')) {
      const relay = await startSlowLink({ target: { host: '127.0.0.1', port: s.upstream.port }, latencyMs: o.slow.delayMs, downBytesPerSec: o.slow.bytesPerSecond, upBytesPerSec: o.slow.bytesPerSecond });
      try {
        log(`case 10: slow link (${o.slow.delayMs} ms each way, ${o.slow.bytesPerSecond / 1e6} MB/s each way), ${o.slowRounds} rounds`);
        const cells = await compare(s, o, 'slow link', o.slowRounds, relay.url, undefined, relay.url, rss, []);
        reports.push({
          title: `10. Slow link: the same closure from an upstream ${2 * o.slow.delayMs} ms away, Nix alone vs through the proxy`,
          markdown: [
            `The same closure (${paths} paths, xz) on an upstream nginx behind \`test/bench/slow-relay.ts\`, a TCP relay on loopback that delays every byte ${o.slow.delayMs} ms each way (a new connection pays one more round trip for its handshake) and limits each direction to ${o.slow.bytesPerSecond / 1e6} MB/s, shared by all connections. No Pi. **Nix alone**: \`substituters = RELAY\`; the proxy sides: \`nix-lan-cache serve --upstream RELAY\`, fresh per run. ${o.slowRounds} rounds, sides alternating.`,
            '',
            comparison(cells, 'Nix alone, through the relay'),
            '',
            `Goal: through the proxy ≤ 0.6× Nix alone. ${goal(cells, 0.6)}.`,
            '',
            `**What bounds it.** With \`max-jobs = 1\` Nix 2.8 fetches the NARs one after the other, each paying the link's round trip (${2 * o.slow.delayMs} ms) and its transfer time, through the proxy as much as without it: about ${((median(cells.get('Nix direct|0')!) / paths) * 1000).toFixed(0)} ms per path here. Narinfo prefetching saves only the narinfo walk (${o.shape.levels + 1} levels, each a round trip or two, well under 2 s of the total). Reaching 0.6× needs the NARs on their way before Nix asks for them (NAR prefetch with a byte budget, planned on the new NAR path: docs/architecture.md). With \`--max-jobs 16\` Nix already fetches 16 NARs at once and the run is bound by the link's bandwidth: ${(o.shape.levels * o.shape.width + 1)} NARs of ~30 kB (xz) are ~9 MB, ${(9e6 / o.slow.bytesPerSecond).toFixed(1)} s at ${o.slow.bytesPerSecond / 1e6} MB/s, whoever asks for them.`,
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
        'Peak RSS (VmHWM) of each proxy of cases 7–9 at the end of its run, by side:',
        '',
        table(['side', 'peak RSS, median (min–max)', 'runs'], [...rss].map(([v, xs]) => [v, summary(xs, 0, ' MiB'), String(xs.length)])),
        '',
        `Goal: under 150 MB (143 MiB) in every run: **${Math.max(...all) < 143 ? 'met' : `NOT met (highest ${Math.max(...all).toFixed(0)} MiB)`}**. Prefetching holds at most the queue (store hashes) and answers in the same byte-bounded narinfo cache (8 MiB) as any lookup; compare the rows with and without it. The rest is Node: on Node 24 an idle proxy is already ~80 MiB, and V8's default young generation lets the heap grow well past what is live under load (see case 5, where nothing is prefetched). A separate check of case 2's uncached narinfo load with \`NODE_OPTIONS=--max-semi-space-size=2\` kept the proxy's peak under 143 MiB at the same request rate, with or without prefetching.`,
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
  for (const v of ['proxy', 'proxy, no prefetch', 'proxy, 2 levels ahead'] as Variant[]) {
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
  return {
    title: '11. What prefetching costs when it guesses wrong',
    markdown: [
      `The client store already holds everything below the root (${s.closure.paths.length - 1} paths); Nix asks only for the root's narinfo and NAR. Every narinfo the proxy fetches beyond that is a wrong guess. Counted in the Pi's nginx access log (requests and body bytes) and the proxy's \`narinfoPrefetch\` stats. One run each, Nix at its defaults.`,
      '',
      table(['side', 'seconds', 'narinfo requests at the Pi', 'narinfo bytes from the Pi', 'prefetched', 'used by Nix'], rows),
      '',
      `One level ahead, a wrong guess costs one narinfo per reference of each path Nix asks for (here the root's ${o.shape.width}); two levels ahead also the references of those.`,
    ].join('\n'),
  };
}
