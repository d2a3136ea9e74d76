import { join } from 'node:path';
import { buildLayeredClosure, type LayeredClosure } from './closure.js';
import { LINKS, startLink, type LinkMode } from './link.js';
import { Nginx } from './nginx.js';
import type { NixClient } from './nix-clients.js';
import { generateKey, makeStaticCache, removeDir, substitute, tempDir, type CacheKey } from './nix.js';
import { memoryOf } from './proc.js';
import { startProxy } from './proxy.js';

/**
 * A laptop whose Wi-Fi flaps (issue 26), for the soak test
 * (test/e2e/flapping-soak.test.ts) and the 30-minute benchmark
 * (test/bench/soak.ts): the Pi (nginx, xz) behind a Wi-Fi link that goes
 * blackholed -> up -> refused -> up every 7 s, an upstream (nginx, zstd) that
 * always answers, one proxy started as the README starts it, and real Nix
 * substituting a 41-path closure into a fresh store again and again.
 */
export const FLAP_PHASE_MS = 7000;
export const FLAP_CYCLE: readonly LinkMode[] = ['blackhole', 'up', 'refused', 'up'];

export interface FlappingHouse {
  dir: string;
  closure: LayeredClosure;
  piKey: CacheKey;
  upKey: CacheKey;
  pi: Nginx;
  upstream: Nginx;
  close(): Promise<void>;
}

/** The closure (41 paths of text, three levels deep, like a small real one), both caches and their nginx. */
export async function flappingHouse(name: string): Promise<FlappingHouse> {
  const dir = await tempDir(name);
  const closure = await buildLayeredClosure(name, { levels: 4, width: 10, fanout: 2, bytes: 200_000 });
  const piKey = await generateKey(dir, 'pi.lan-1');
  const upKey = await generateKey(dir, 'upstream-1');
  await Promise.all([makeStaticCache(join(dir, 'pi'), [closure.root], piKey, 'xz'), makeStaticCache(join(dir, 'up'), [closure.root], upKey, 'zstd')]);
  const started = await Promise.allSettled([Nginx.start({ root: join(dir, 'pi'), workDir: join(dir, 'pi-nginx') }), Nginx.start({ root: join(dir, 'up'), workDir: join(dir, 'up-nginx') })]);
  const [pi, upstream] = started.map((s) => (s.status === 'fulfilled' ? s.value : undefined));
  if (!pi || !upstream) {
    await Promise.all([pi?.stop(), upstream?.stop()]);
    await removeDir(dir);
    throw started.find((s) => s.status === 'rejected')!.reason;
  }
  return {
    dir,
    closure,
    piKey,
    upKey,
    pi,
    upstream,
    async close() {
      await Promise.all([pi.stop(), upstream.stop()]);
      await removeDir(dir);
    },
  };
}

export interface SoakOptions {
  /** The clients, in turn (one command each), or all at once with `parallel`. */
  clients: readonly NixClient[];
  /** Each client runs its own commands back to back, all clients at once (one laptop's several Nix, or several users). */
  parallel?: boolean;
  /** How long the link flaps after the warm-up (the first command and one whole cycle of the link). */
  durationMs: number;
  /** How often the proxy's VmRSS and VmHWM are read. */
  sampleEveryMs: number;
  /** Called after each sample (e.g. to print a line every minute), with the counts at the end of the warm-up. */
  onSample?: (sample: MemorySample, atStart: { commands: number; failed: number }) => void;
}

export interface MemorySample {
  /** Since the warm-up ended. */
  atMs: number;
  rssMiB: number;
  hwmMiB: number;
  /** Commands finished so far (warm-up included). */
  commands: number;
  failed: number;
}

export interface SoakProgress {
  commands: number;
  /** Commands finished, by client name. */
  commandsBy: Record<string, number>;
  failed: number;
  linkChanges: number;
}

export interface SoakResult extends SoakProgress {
  /** The first command (on a steady link, before the flapping): it must work. */
  first: { code: number | null; stderr: string };
  failures: Array<{ run: number; client: string; mode: LinkMode; stderr: string }>;
  /** Proxy RSS when the warm-up ended: what growth is measured from. */
  startRssMiB: number;
  /** Commands finished (and failed) when the warm-up ended. */
  atStart: { commands: number; failed: number };
  samples: MemorySample[];
  /** The proxy was still running at the end. */
  alive: boolean;
  /** Its last error and fatal log lines. */
  lastErrors: Array<Record<string, unknown>>;
  narsFromPi: number;
  narsFromUpstream: number;
  piUrl: string;
}

/**
 * One soak: a link in front of the Pi, a proxy (as from npm: the executable,
 * which sets its own memory settings), the first command on a steady link,
 * then the link cycles while commands run back to back, at most 10,000.
 * RSS is measured from the end of one whole cycle: by then every path the
 * proxy takes (failover, probes, hedging, NARs fetched ahead from either
 * cache) has run, its code is compiled and its pools and buffers are made.
 * The proxy and the link are stopped before it returns.
 */
export async function soakFlapping(house: FlappingHouse, o: SoakOptions): Promise<SoakResult> {
  const { dir, closure, pi, upstream } = house;
  const link = await startLink({ target: { host: '127.0.0.1', port: pi.port }, ...LINKS.wifi });
  // As the README starts it (npx runs the executable), with mDNS off (the network rule).
  const keys = [house.piKey.publicKey, house.upKey.publicKey];
  const proxy = await startProxy(['--no-mdns', '--log-level', 'info', '--lan', link.url, '--upstream', upstream.url, ...keys.flatMap((k) => ['--trusted-public-key', k])], { asFromNpm: true }).catch(async (err: unknown) => {
    await link.close();
    throw err;
  });
  const pid = proxy.child.pid!;
  const runOnce = async (n: number, client: NixClient = o.clients[n % o.clients.length]!) => {
    const store = join(dir, `${client.suite}-store-${n}`);
    const xdg = join(dir, `${client.suite}-xdg-${n}`);
    const res = await substitute(store, [closure.root], proxy.url, { client, xdgCache: xdg, trustedKeys: keys, timeoutMs: 120_000 });
    await removeDir(store);
    await removeDir(xdg);
    return { client, res };
  };

  const progress: SoakProgress = { commands: 0, commandsBy: {}, failed: 0, linkChanges: 0 };
  const failures: SoakResult['failures'] = [];
  const samples: MemorySample[] = [];
  let startRssMiB = 0;
  const atStart = { commands: 0, failed: 0 };
  let measuredFrom = 0;
  let sampler: NodeJS.Timeout | undefined;
  let flapper: NodeJS.Timeout | undefined;
  try {
    const { res: first } = await runOnce(0);
    progress.commands++;
    if (first.code !== 0) return await finish({ first, failures, startRssMiB: (await memoryOf(pid)).rssMiB, samples, alive: proxy.child.exitCode === null });
    flapper = setInterval(() => void link.setMode(FLAP_CYCLE[progress.linkChanges++ % FLAP_CYCLE.length]!), FLAP_PHASE_MS);
    const warm = Date.now() + FLAP_CYCLE.length * FLAP_PHASE_MS;
    const ended = warm + o.durationMs;
    let n = 0;
    const loop = async (client?: NixClient) => {
      while (++n <= 10_000 && Date.now() < ended && proxy.child.exitCode === null) {
        await measureOnceWarm();
        const mode = link.mode;
        const run = await runOnce(n, client);
        progress.commands++;
        progress.commandsBy[run.client.name] = (progress.commandsBy[run.client.name] ?? 0) + 1;
        if (run.res.code !== 0) {
          progress.failed++;
          failures.push({ run: n, client: run.client.name, mode, stderr: run.res.stderr.slice(-2000) });
        }
      }
    };
    const measureOnceWarm = async () => {
      if (!measuredFrom && Date.now() >= warm) {
        measuredFrom = Date.now();
        startRssMiB = (await memoryOf(pid)).rssMiB;
        Object.assign(atStart, { commands: progress.commands, failed: progress.failed });
        sampler = setInterval(() => {
          void memoryOf(pid).then(
            (m) => {
              const sample = { atMs: Date.now() - measuredFrom, ...m, commands: progress.commands, failed: progress.failed };
              samples.push(sample);
              o.onSample?.(sample, atStart);
            },
            () => {},
          );
        }, o.sampleEveryMs);
      }
    };
    await (o.parallel ? Promise.all(o.clients.map((c) => loop(c))) : loop());
    return await finish({ first, failures, startRssMiB, samples, alive: proxy.child.exitCode === null });
  } finally {
    clearInterval(flapper);
    clearInterval(sampler);
    await link.setMode('up');
    await proxy.stop();
    await link.close();
  }

  async function finish(r: Pick<SoakResult, 'first' | 'failures' | 'startRssMiB' | 'samples' | 'alive'>): Promise<SoakResult> {
    const narsFrom = async (url: string) => {
      if (!r.alive) return NaN;
      const stats = (await (await fetch(`${proxy.url}/_/stats`)).json()) as { periods: { sinceInstall: { origins: Record<string, { nar: { requests: number } }> } } };
      return stats.periods.sinceInstall.origins[new URL(url).host]?.nar.requests ?? 0;
    };
    return {
      ...progress,
      ...r,
      atStart,
      lastErrors: proxy.logs.filter((l) => l.level === 60 || l.level === 50).slice(-5),
      narsFromPi: await narsFrom(link.url),
      narsFromUpstream: await narsFrom(upstream.url),
      piUrl: link.url,
    };
  }
}
