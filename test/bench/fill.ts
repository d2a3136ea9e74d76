import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Nginx } from '../helpers/nginx.js';
import { buildClosure, generateKey, makeStaticCache, substitute, type Closure } from '../helpers/nix.js';
import { startFill, startPiNginx } from '../helpers/pi-fill.js';
import { freePort, waitForPort } from '../helpers/ports.js';
import { startProxy } from '../helpers/proxy.js';
import { startLink } from '../helpers/link.js';
import { log, median, summary, table, type CaseReport } from './util.js';

export interface FillBenchOptions {
  dir: string;
  /** Leaves of the closure: `count` of `size` random bytes each. */
  leaves: Array<{ count: number; size: number }>;
  latencyMs: number;
  downBytesPerSec: number;
  rounds: number;
}

/** nginx `proxy_cache` in front of the upstream, as nixos-passthru-cache sets it up: what a user could build instead of fill. */
export const PROXY_CACHE_DIRECTIVES = (cacheDir: string, upstreamHostPort: string, port: number) => `
  proxy_cache_path ${cacheDir} levels=1:2 keys_zone=nix:16m max_size=20g inactive=365d use_temp_path=off;
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://${upstreamHostPort};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache nix;
      proxy_cache_valid 200 365d;
      proxy_cache_valid 404 1m;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 300s;
      proxy_read_timeout 300s;
    }
  }
`;

type Side = 'fill' | 'fill, laptops race it' | 'proxy_cache' | 'no LAN cache';

/**
 * Case 7: two laptops realise the same closure one after the other, with the
 * upstream behind a slow link; the Pi is either fill behind nginx, nginx
 * `proxy_cache`, or absent. Each laptop is real Nix through its own proxy.
 */
export async function runFillBench(o: FillBenchOptions): Promise<CaseReport> {
  await mkdir(o.dir, { recursive: true });
  const key = await generateKey(o.dir, 'upstream-1');
  const leaves = o.leaves.flatMap((l, i) => Array.from({ length: l.count }, (_, j) => ({ name: `l${i}-${j}`, size: l.size })));
  const closures: Closure[] = [];
  for (let r = 0; r < o.rounds; r++) closures.push(await buildClosure(`bench-fill-${process.pid}-${r}`, leaves));
  const upDir = join(o.dir, 'upstream');
  for (const c of closures) await makeStaticCache(upDir, c.paths, key);
  const upstream = await Nginx.start({ root: upDir, workDir: join(o.dir, 'nginx-upstream') });
  const link = await startLink({ target: { host: '127.0.0.1', port: upstream.port }, latencyMs: o.latencyMs, downBytesPerSec: o.downBytesPerSec });
  const laptopConfig = join(o.dir, 'laptop.json');
  // proxy_cache also fetches from upstream itself: the laptops wait for it rather than race upstream. fill is given with
  // --lan-fill, which does that by itself (docs/fill.md); "fill, laptops race it" is fill behind a plain --lan (hedged).
  await writeFile(laptopConfig, JSON.stringify({ timeouts: { lan: { hedgeMs: 0, firstByteMs: 60_000, bodyIdleMs: 60_000 } } }));
  const times: Record<Side, { first: number[]; second: number[]; linkBytes: number[]; firstLinkBytes: number[] }> = {
    fill: { first: [], second: [], linkBytes: [], firstLinkBytes: [] },
    'fill, laptops race it': { first: [], second: [], linkBytes: [], firstLinkBytes: [] },
    proxy_cache: { first: [], second: [], linkBytes: [], firstLinkBytes: [] },
    'no LAN cache': { first: [], second: [], linkBytes: [], firstLinkBytes: [] },
  };
  let laptopN = 0;
  const lanArgs = (side: Side, lan: string | undefined): string[] =>
    !lan ? [] : side === 'fill' ? ['--lan-fill', lan] : side === 'fill, laptops race it' ? ['--lan', lan] : ['--lan', lan, '--config', laptopConfig];
  const realise = async (closure: Closure, side: Side, lan: string | undefined): Promise<number> => {
    const n = ++laptopN;
    const proxy = await startProxy(['--no-mdns', '--log-level', 'info', ...lanArgs(side, lan), '--upstream', link.url, '--trusted-public-key', key.publicKey]);
    try {
      const store = join(o.dir, `laptop-${n}`);
      const started = performance.now();
      const res = await substitute(store, [closure.root], proxy.url, { xdgCache: join(o.dir, `xdg-${n}`), trustedKeys: [key.publicKey], timeoutMs: 600_000 });
      const s = (performance.now() - started) / 1000;
      if (res.code !== 0 || !closure.paths.every((p) => existsSync(join(store, p)))) throw new Error(`laptop ${n} failed: ${res.stderr.slice(-2000)}`);
      return s;
    } finally {
      await proxy.stop();
    }
  };

  const sides: Side[] = ['fill', 'fill, laptops race it', 'proxy_cache', 'no LAN cache'];
  for (let r = 0; r < o.rounds; r++) {
    const closure = closures[r]!;
    for (const side of r % 2 ? [...sides].reverse() : sides) {
      const work = join(o.dir, `r${r}-${side.replace(/ /g, '-')}`);
      await mkdir(work, { recursive: true });
      const before = link.bytesDown();
      let lan: string | undefined;
      let stop = async () => {};
      if (side.startsWith('fill')) {
        const cache = join(work, 'cache');
        await mkdir(cache);
        const fill = await startFill(['--cache', cache, '--upstream', link.url, '--trusted-public-key', key.publicKey]);
        const pi = await startPiNginx(join(work, 'nginx'), cache, fill.port);
        lan = pi.url;
        stop = async () => {
          await pi.stop();
          await fill.stop();
        };
      } else if (side === 'proxy_cache') {
        const port = await freePort();
        const root = join(work, 'root');
        await mkdir(root, { recursive: true });
        const nginx = await Nginx.start({ root, workDir: join(work, 'nginx'), extraHttp: PROXY_CACHE_DIRECTIVES(join(work, 'proxy-cache'), `127.0.0.1:${link.port}`, port) });
        await waitForPort(port);
        lan = `http://127.0.0.1:${port}/`;
        stop = () => nginx.stop();
      }
      try {
        const first = await realise(closure, side, lan);
        const firstLinkBytes = link.bytesDown() - before;
        if (side === 'fill') {
          // The second laptop comes later: let fill publish the last narinfos.
          const cacheDir = join(work, 'cache');
          for (let i = 0; i < 200 && !closure.paths.every((p) => existsSync(join(cacheDir, `${p.slice(11, 43)}.narinfo`))); i++) await new Promise((res) => setTimeout(res, 50));
        }
        const second = await realise(closure, side, lan);
        times[side].first.push(first);
        times[side].second.push(second);
        times[side].linkBytes.push(link.bytesDown() - before);
        times[side].firstLinkBytes.push(firstLinkBytes);
        log(`fill bench round ${r + 1}/${o.rounds} ${side}: first laptop ${first.toFixed(2)} s, second ${second.toFixed(2)} s, ${((link.bytesDown() - before) / 2 ** 20).toFixed(1)} MiB over the slow link`);
      } finally {
        await stop();
      }
    }
  }
  await link.close();
  await upstream.stop();

  const total = leaves.reduce((s, l) => s + l.size, 0);
  const rows = sides.map((side) => {
    const t = times[side];
    return [
      side,
      summary(t.first, 2, ' s'),
      summary(t.second, 2, ' s'),
      `${(median(t.second) / median(t.first)).toFixed(2)}×`,
      summary(t.firstLinkBytes.map((b) => b / 2 ** 20), 1, ' MiB'),
      summary(t.linkBytes.map((b) => b / 2 ** 20), 1, ' MiB'),
    ];
  });
  return {
    title: '8. Second laptop behind a filling Pi, upstream on a slow link',
    markdown: [
      `Two laptops (real Nix 2.8, each through its own \`nix-lan-cache serve\`, fresh store and narinfo cache) realise the same closure one after the other: ${closures[0]!.paths.length} paths, ${(total / 2 ** 20).toFixed(1)} MiB of incompressible leaves (xz). The upstream (nginx over a \`nix copy\` cache) is reached through \`test/helpers/link.ts\`, a relay on loopback that adds ${o.latencyMs} ms each way and limits downloads to ${(o.downBytesPerSec / 2 ** 20).toFixed(1)} MiB/s.`,
      `The LAN cache is **fill** (nginx running docs/pi.md's fill block, \`nix-lan-cache fill\` behind it), **nginx \`proxy_cache\`** in front of the upstream (as nixos-passthru-cache does; config in \`test/bench/fill.ts\`), or **none** (the laptops' proxies ask upstream only). The laptops' proxies wait for fill because they are told it fills (\`--lan-fill\`), and for \`proxy_cache\` by \`timeouts.lan.hedgeMs: 0\`; **fill, laptops race it** is fill behind a plain \`--lan\` with the default 200 ms hedge, as before the laptop side of fill was built. ${o.rounds} rounds, a new closure and empty caches each round, sides alternating.`,
      '',
      table(['LAN cache', 'first laptop', 'second laptop', 'second / first', 'over the slow link (first laptop)', 'over the slow link (both laptops)'], rows),
      '',
      `Both LAN caches make the second laptop fast and send each byte over the slow link once. The first laptop through fill took ${(((median(times.fill.first) - median(times.proxy_cache.first)) * 1000) / closures[0]!.paths.length).toFixed(0)} ms per path longer than through \`proxy_cache\`, and about as long as with no LAN cache. Where that goes was not profiled; fill's own work per path is unpacking the NAR (a spawned xz) to check it before releasing its last byte, and an fsync and rename of the NAR and of the narinfo, on the same 2 cores as everything else. What the times do not show:`,
      "fill's cache is a binary cache push, gc and verify manage (`verify` accepts it, `gc --max-size` bounds it), and fill",
      "checked every narinfo's signature and every NAR's hashes before storing it; `proxy_cache` stores whatever upstream",
      'sent, under opaque names, and its narinfos and NARs expire by its own rules, not by closure.',
    ].join('\n'),
  };
}
