import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LINKS, startLink } from '../helpers/link.js';
import { Nginx } from '../helpers/nginx.js';
import { buildClosure, generateKey, makeStaticCache, removeDir, substitute, type CacheKey } from '../helpers/nix.js';
import { NIX_CLIENTS, type NixClient } from '../helpers/nix-clients.js';
import { startProxy, type ProxyProcess } from '../helpers/proxy.js';
import { log, median, peakRssMiB, ratio, summary, table, type CaseReport } from './util.js';

export interface HoldBenchOptions {
  dir: string;
  /** Large leaves (incompressible) and small ones. */
  large: { count: number; bytes: number };
  small: { count: number; bytes: number };
  rounds: number;
}

interface Side {
  name: string;
  /** `cache` settings of the proxy's config file. */
  cache: Record<string, unknown>;
}

const SIDES: Side[] = [
  { name: 'held until verified (default: memory, then spool)', cache: {} },
  { name: 'streamed as it comes (holdMaxSeconds 0)', cache: { holdMaxSeconds: 0 } },
];

let runs = 0;

/**
 * "What holding NARs back costs" (issue 22, item 4): a LAN cache's NAR that
 * upstream could also serve is held back until its NarHash is verified
 * (nar/nar-hold.ts). Real Nix of each version substitutes a closure with
 * large NARs from the Pi (nginx, xz) through the proxy, on loopback and
 * behind the Wi-Fi link, with holding on and off, sides alternating; wall
 * time and the proxy's peak RSS.
 */
export async function runHoldBench(o: HoldBenchOptions): Promise<CaseReport> {
  await mkdir(o.dir, { recursive: true });
  const leaves = [...Array.from({ length: o.large.count }, (_, i) => ({ name: `large${i}`, size: o.large.bytes })), ...Array.from({ length: o.small.count }, (_, i) => ({ name: `small${i}`, size: o.small.bytes }))];
  log(`hold: building a closure of ${leaves.length + 1} paths (${o.large.count} × ${o.large.bytes / 2 ** 20} MiB) and the Pi's (xz) and upstream's (zstd) caches`);
  const closure = await buildClosure(`bench-hold-${Date.now()}`, leaves);
  const piKey = await generateKey(o.dir, 'pi.lan-1');
  const upKey = await generateKey(o.dir, 'upstream-1');
  await Promise.all([makeStaticCache(join(o.dir, 'pi'), [closure.root], piKey, 'xz'), makeStaticCache(join(o.dir, 'up'), [closure.root], upKey, 'zstd')]);
  await Promise.all([mkdir(join(o.dir, 'pi-nginx')), mkdir(join(o.dir, 'up-nginx'))]);
  const pi = await Nginx.start({ root: join(o.dir, 'pi'), workDir: join(o.dir, 'pi-nginx') });
  const up = await Nginx.start({ root: join(o.dir, 'up'), workDir: join(o.dir, 'up-nginx') });
  const wifi = await startLink({ ...LINKS.wifi, target: { host: '127.0.0.1', port: pi.port } });
  const keys: CacheKey[] = [piKey, upKey];
  const rows: string[][] = [];
  try {
    for (const [where, piUrl] of [['loopback', pi.url], ['Wi-Fi (2 ms, 100 Mbit/s)', wifi.url]] as const) {
      for (const client of NIX_CLIENTS) {
        const times = SIDES.map(() => [] as number[]);
        const rss = SIDES.map(() => [] as number[]);
        for (let r = 0; r < o.rounds; r++) {
          const order = r % 2 ? [...SIDES.keys()].reverse() : [...SIDES.keys()];
          for (const i of order) {
            const { seconds, peak } = await once(o, closure.root, piUrl, up.url, keys, SIDES[i]!, client);
            times[i]!.push(seconds);
            rss[i]!.push(peak);
          }
        }
        SIDES.forEach((side, i) => rows.push([where, client.name, side.name, summary(times[i]!), ratio(times[i]!, times[1]!), `${median(rss[i]!).toFixed(0)}`]));
        log(`hold: ${where}, ${client.name}: held ${median(times[0]!).toFixed(2)} s, streamed ${median(times[1]!).toFixed(2)} s`);
      }
    }
  } finally {
    await Promise.all([wifi.close(), pi.stop(), up.stop()]);
  }
  return {
    title: 'Holding NARs back until verified: what it costs',
    markdown: [
      `A closure of ${leaves.length + 1} paths (${o.large.count} of ${o.large.bytes / 2 ** 20} MiB and ${o.small.count} of ${o.small.bytes / 1000} kB, incompressible) on the Pi (nginx, xz) and an upstream (nginx, zstd), substituted by real Nix at its defaults into a fresh store through a fresh proxy (\`--lan PI --upstream UP\`), the Pi on loopback or behind the Wi-Fi link (\`test/helpers/link.ts\`). Held: the proxy's defaults (a Pi NAR upstream could serve is held back until its NarHash matches, in memory within the 32 MiB budget, else in a spool file). Streamed: \`cache.holdMaxSeconds = 0\`. ${o.rounds} rounds, sides alternating; medians (min–max); peak RSS is the proxy's VmHWM.`,
      '',
      table(['Pi', 'Nix', 'side', 'nix-store -r, s', 'vs streamed', 'proxy peak RSS, MiB'], rows),
    ].join('\n'),
  };
}

async function once(o: HoldBenchOptions, root: string, piUrl: string, upUrl: string, keys: CacheKey[], side: Side, client: NixClient): Promise<{ seconds: number; peak: number }> {
  const n = ++runs;
  const config = join(o.dir, `proxy-${n}.json`);
  await writeFile(config, JSON.stringify({ cache: side.cache }));
  const proxy: ProxyProcess = await startProxy(['--no-mdns', '--config', config, '--lan', piUrl, '--upstream', upUrl, ...keys.flatMap((k) => ['--trusted-public-key', k.publicKey])], { asFromNpm: true });
  try {
    const store = join(o.dir, `client-${n}`);
    const xdg = join(o.dir, `xdg-${n}`);
    const res = await substitute(store, [root], proxy.url, { xdgCache: xdg, trustedKeys: keys.map((k) => k.publicKey), timeoutMs: 300_000, client });
    if (res.code !== 0) throw new Error(`nix-store -r via ${proxy.url} failed (exit ${res.code}): ${res.stderr.slice(-400)}`);
    const peak = await peakRssMiB(proxy.child.pid!);
    await Promise.all([removeDir(store), removeDir(xdg)]);
    return { seconds: res.ms / 1000, peak };
  } finally {
    await proxy.stop();
  }
}

