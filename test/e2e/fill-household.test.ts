import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StatsResponse } from '../../src/api.js';
import { startLink, type Link } from '../helpers/link.js';
import { Nginx } from '../helpers/nginx.js';
import { buildClosure, generateKey, makeStaticCache, removeDir, substitute, tempDir, type CacheKey, type Closure } from '../helpers/nix.js';
import { startFill, startPiNginx, type FillProcess, type PiNginx } from '../helpers/pi-fill.js';
import { NIX_CLIENTS, type NixClient } from '../helpers/nix-clients.js';
import { stopAll } from '../helpers/proc.js';
import { startProxy, type ProxyProcess } from '../helpers/proxy.js';
import { until } from '../helpers/wait.js';

/** The laptops' proxies' flag for a Pi that fills: `--lan-fill` (FILL_E2E_FLAG=--lan shows what happens without it). */
const LAN_FLAG = process.env.FILL_E2E_FLAG ?? '--lan-fill';

/**
 * One download per household (docs/fill.md): an upstream (real nginx over a
 * `nix copy` cache), the Pi (real nginx running docs/pi.md's fill block, and
 * `nix-lan-cache fill` reaching upstream through a slow link: 400 ms each
 * way, so every miss at the Pi takes far longer than the laptops' 200 ms hedge
 * delay), and laptops (real Nix through their own `nix-lan-cache serve
 * --no-mdns --lan-fill PI`, reaching upstream directly).
 */
describe('one download per household: laptops wait for a filling Pi instead of racing upstream', () => {
  let dir: string;
  let key: CacheKey;
  // Closures of their own per Nix (by suite): each Nix meets a Pi that holds none of its paths yet.
  const houseOf: Record<string, Closure> = {};
  const otherOf: Record<string, Closure> = {};
  let upstream: Nginx;
  let piLink: Link;
  let piCache: string;
  let fill: FillProcess;
  let pi: PiNginx;
  const proxies: ProxyProcess[] = [];
  let n = 0;

  async function laptop(client: NixClient, closure: Closure) {
    const proxy = await startProxy(['--no-mdns', LAN_FLAG, pi.url, '--upstream', upstream.url, '--trusted-public-key', key.publicKey]);
    proxies.push(proxy);
    const store = join(dir, `laptop-${++n}`);
    const started = Date.now();
    const res = await substitute(store, [closure.root], proxy.url, { client, xdgCache: join(dir, `xdg-${n}`), trustedKeys: [key.publicKey], timeoutMs: 180_000 });
    const ms = Date.now() - started;
    expect(res.code, `${client.name}: ${res.stderr}`).toBe(0);
    expect(closure.paths.every((p) => existsSync(join(store, p)))).toBe(true);
    const stats = (await (await fetch(`${proxy.url}/_/stats`)).json()) as StatsResponse;
    const piName = new URL(pi.url).host;
    return { ms, period: stats.periods.sinceInstall, pi: stats.periods.sinceInstall.origins[piName] };
  }

  /** How often upstream sent each NAR, by URI, since its log had `mark` entries. */
  async function upstreamNarCounts(mark: number): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    for (const e of (await upstream.narHits()).slice(mark)) counts.set(e.uri, (counts.get(e.uri) ?? 0) + 1);
    return counts;
  }
  const narinfoOf = (path: string) => join(piCache, `${path.slice('/nix/store/'.length, '/nix/store/'.length + 32)}.narinfo`);

  beforeAll(async () => {
    dir = await tempDir('fill-household');
    key = await generateKey(dir, 'upstream-1');
    const salt = `household-${process.pid}`;
    for (const { suite } of NIX_CLIENTS) {
      houseOf[suite] = await buildClosure(`${salt}-house-${suite}`, [{ name: 'a', size: 30_000 }, { name: 'b', size: 200_000 }, { name: 'c', size: 1_000_000 }]);
      otherOf[suite] = await buildClosure(`${salt}-other-${suite}`, [{ name: 'd', size: 100_000 }, { name: 'e', size: 300_000 }]);
    }
    const upDir = join(dir, 'upstream');
    await makeStaticCache(upDir, [...Object.values(houseOf), ...Object.values(otherOf)].flatMap((c) => c.paths), key);
    upstream = await Nginx.start({ root: upDir, workDir: join(dir, 'nginx-upstream') });
    piLink = await startLink({ target: { host: '127.0.0.1', port: Number(new URL(upstream.url).port) }, latencyMs: 400, downBytesPerSec: 4 * 2 ** 20 });
    piCache = join(dir, 'pi-cache');
    await mkdir(piCache);
    fill = await startFill(['--cache', piCache, '--upstream', piLink.url, '--trusted-public-key', key.publicKey]);
    pi = await startPiNginx(join(dir, 'nginx-pi'), piCache, fill.port);
  }, 600_000);

  afterAll(async () => {
    await Promise.all(proxies.map((p) => p.stop()));
    await stopAll();
    await piLink?.close();
    if (dir) await removeDir(dir);
  });

  for (const client of NIX_CLIENTS) it(`${client.name}: laptop A realises a closure only upstream has: every NAR crosses the internet once, through the Pi, and A counts it "filled for us"; laptop B then gets it "already on the Pi"`, async () => {
    const house = houseOf[client.suite]!;
    const mark = (await upstream.narHits()).length;
    const a = await laptop(client, house);
    await until('the Pi published every path', 30_000, () => house.paths.every((p) => existsSync(narinfoOf(p))));

    const counts = await upstreamNarCounts(mark);
    expect([...counts.values()].every((c) => c === 1), JSON.stringify([...counts])).toBe(true);
    expect(counts.size).toBe(house.paths.length);
    // Everything A got came through the Pi, which fetched it for A just now.
    expect(a.period.nar.upstreamBytes).toBe(0);
    expect(a.pi?.nar.filledBytes).toBeGreaterThan(1_000_000);
    expect(a.period.fill).toEqual({ filledBytes: a.period.nar.lanBytes, alreadyThereBytes: 0 });
    expect(a.period.bytesKeptOffInternet).toBe(0);

    const b = await laptop(client, house);
    expect(await upstreamNarCounts(mark)).toEqual(counts); // not one NAR more
    expect(b.period.nar.upstreamBytes).toBe(0);
    expect(b.period.fill).toEqual({ filledBytes: 0, alreadyThereBytes: b.period.nar.lanBytes });
    expect(b.period.fill.alreadyThereBytes).toBeGreaterThan(1_000_000);
    expect(b.period.bytesKeptOffInternet).toBe(b.period.nar.lanBytes);
  });

  describe("the Pi's internet is down", () => {
    beforeAll(async () => {
      await piLink.close(); // fill's only way to upstream
    });

    for (const client of NIX_CLIENTS) it(`${client.name}: fill answers each miss with a quick 404 and the laptop realises the closure from its own upstream, its Pi circuit never opened`, async () => {
      const other = otherOf[client.suite]!;
      const before = (await pi.log()).length;
      const c = await laptop(client, other);
      expect(c.ms).toBeLessThan(30_000);
      const piAnswers = (await pi.log()).slice(before).filter((e) => e.uri.endsWith('.narinfo'));
      expect(piAnswers.length).toBeGreaterThan(0);
      expect(piAnswers.every((e) => e.status === 404)).toBe(true);
      // The Pi answered (a miss), it did not time out: no wait on its 5 s first-byte timeout.
      expect(c.pi?.narinfo.timeout).toBe(0);
      expect(c.pi?.narinfo.miss).toBeGreaterThan(0);
      expect(c.period.nar.upstreamBytes).toBeGreaterThan(300_000);
      expect(other.paths.some((p) => existsSync(narinfoOf(p)))).toBe(false);
    });
  });
});
