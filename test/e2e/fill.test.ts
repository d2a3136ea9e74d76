import { existsSync } from 'node:fs';
import { cp, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkCache, cli } from '../helpers/cache.js';
import { Nginx } from '../helpers/nginx.js';
import { buildClosure, generateKey, makeStaticCache, removeDir, substitute, tempDir, type CacheKey, type Closure } from '../helpers/nix.js';
import { startFill, startPiNginx, type FillProcess, type PiNginx } from '../helpers/pi-fill.js';
import { HOST_NIX, NIX_CLIENTS, type NixClient } from '../helpers/nix-clients.js';
import { run, runOk, stopAll } from '../helpers/proc.js';
import { startProxy, type ProxyProcess } from '../helpers/proxy.js';
import { until } from '../helpers/wait.js';

/**
 * The house: an upstream (real nginx over a static cache made by `nix copy`),
 * the Pi (real nginx running docs/pi.md's fill block as written, and
 * `nix-lan-cache fill` behind it), and laptops (real Nix through their own
 * `nix-lan-cache serve --no-mdns --lan PI`).
 */
describe('fill: what one laptop fetched, the next gets from the Pi', () => {
  let dir: string;
  let upKey: CacheKey;
  let otherKey: CacheKey;
  // Closures of their own per Nix (by suite), so that each Nix meets a Pi that does not hold them yet.
  const mainOf: Record<string, Closure> = {};
  const bigOf: Record<string, Closure> = {};
  let untrusted: Closure;
  let corrupt: Closure;
  let upstream: Nginx;
  let corruptUpstream: Nginx;
  let goodCopy: Nginx;
  let slowUpstream: Nginx;
  let piCache: string;
  let fill: FillProcess;
  let pi: PiNginx;
  let laptopConfig: string;
  const proxies: ProxyProcess[] = [];
  let laptops = 0;

  const fillArgs = () => [
    '--cache', piCache,
    '--upstream', upstream.url, '--upstream', corruptUpstream.url, '--upstream', slowUpstream.url,
    '--trusted-public-key', upKey.publicKey,
  ];

  /** A laptop running `client`: its own proxy (LAN: the Pi; upstream: `upstreamUrl`) and a fresh store and narinfo cache; realises `closure`. */
  async function laptop(closure: Closure, upstreamUrl = upstream.url, client: NixClient = HOST_NIX) {
    const n = ++laptops;
    const proxy = await startProxy(['--no-mdns', '--lan', pi.url, '--upstream', upstreamUrl, '--trusted-public-key', upKey.publicKey, '--trusted-public-key', otherKey.publicKey, '--config', laptopConfig]);
    proxies.push(proxy);
    const store = join(dir, `laptop-${n}`);
    const res = await substitute(store, [closure.root], proxy.url, { client, xdgCache: join(dir, `xdg-${n}`), trustedKeys: [upKey.publicKey, otherKey.publicKey], timeoutMs: 180_000 });
    return { ...res, store, has: (c: Closure) => c.paths.every((p) => existsSync(join(store, p))) };
  }

  const narinfoOf = (path: string) => join(piCache, `${path.slice('/nix/store/'.length, '/nix/store/'.length + 32)}.narinfo`);
  const piHas = (c: Closure) => c.paths.every((p) => existsSync(narinfoOf(p)));
  const temps = async () => [...(await readdir(piCache)), ...(await readdir(join(piCache, 'nar'))).map((n) => `nar/${n}`)].filter((n) => n.split('/').pop()!.startsWith('.tmp-'));

  beforeAll(async () => {
    dir = await tempDir('fill-e2e');
    upKey = await generateKey(dir, 'upstream-1');
    otherKey = await generateKey(dir, 'other-1');
    const salt = `fill-${process.pid}`;
    for (const { suite } of NIX_CLIENTS) {
      mainOf[suite] = await buildClosure(`${salt}-main-${suite}`, [{ name: 'a', size: 30_000 }, { name: 'b', size: 200_000 }, { name: 'c', size: 1_000_000 }]);
      bigOf[suite] = await buildClosure(`${salt}-big-${suite}`, [{ name: 'big', size: 40_000_000 }]);
    }
    untrusted = await buildClosure(`${salt}-untrusted`, [{ name: 'u', size: 20_000 }]);
    corrupt = await buildClosure(`${salt}-corrupt`, [{ name: 'm', size: 300_000 }]);
    const all = (c: Record<string, Closure>) => Object.values(c).flatMap((x) => x.paths);

    const upDir = join(dir, 'upstream');
    await makeStaticCache(upDir, all(mainOf), upKey);
    await makeStaticCache(upDir, untrusted.paths, otherKey); // signed only by a key fill does not trust
    upstream = await Nginx.start({ root: upDir, workDir: join(dir, 'nginx-upstream') });

    // The same signed paths twice: a good copy, and one whose NAR has a byte flipped half way.
    const goodDir = join(dir, 'good-copy');
    await makeStaticCache(goodDir, corrupt.paths, upKey);
    const badDir = join(dir, 'corrupt-upstream');
    await cp(goodDir, badDir, { recursive: true });
    for (const name of await readdir(join(badDir, 'nar'))) {
      const file = await readFile(join(badDir, 'nar', name));
      if (file.length < 100_000) continue;
      file[file.length >> 1] = file[file.length >> 1]! ^ 0xff;
      await writeFile(join(badDir, 'nar', name), file);
    }
    goodCopy = await Nginx.start({ root: goodDir, workDir: join(dir, 'nginx-good') });
    corruptUpstream = await Nginx.start({ root: badDir, workDir: join(dir, 'nginx-corrupt') });

    // 40 MB at 4 MB/s: a NAR that takes ten seconds, to kill fill in the middle of.
    const slowDir = join(dir, 'slow-upstream');
    await makeStaticCache(slowDir, all(bigOf), upKey, 'zstd');
    slowUpstream = await Nginx.start({ root: slowDir, workDir: join(dir, 'nginx-slow'), limitRate: '4m' });

    piCache = join(dir, 'pi-cache');
    await mkdir(piCache);
    fill = await startFill(fillArgs());
    pi = await startPiNginx(join(dir, 'nginx-pi'), piCache, fill.port);
    // The laptops wait for the Pi (as a household with a filling Pi should; docs/fill.md) instead of racing upstream after 200 ms.
    laptopConfig = join(dir, 'laptop.json');
    await writeFile(laptopConfig, JSON.stringify({ timeouts: { lan: { hedgeMs: 0, firstByteMs: 15_000, bodyIdleMs: 15_000 } } }));
  }, 600_000);

  afterAll(async () => {
    await Promise.all(proxies.map((p) => p.stop()));
    await stopAll();
    if (dir) await removeDir(dir);
  });

  for (const client of NIX_CLIENTS) it(`${client.name}: laptop A realises a closure only upstream has: the Pi then holds all of it, verify accepts it, upstream sent each NAR once; with upstream gone laptop B gets it from the Pi`, async () => {
    const main = mainOf[client.suite]!;
    const upstreamMark = (await upstream.narHits()).length;
    const filledBefore = ((await (await fetch(`${fill.url}/_/stats`)).json()) as Record<string, number>).pathsFilled ?? 0;
    const a = await laptop(main, upstream.url, client);
    expect(a.code, a.stderr).toBe(0);
    expect(a.has(main)).toBe(true);

    await until('the Pi published every path', 30_000, () => piHas(main));
    const check = await checkCache(piCache);
    expect(check.problems).toEqual([]);
    const verified = await cli(['verify', '--cache', piCache, '--deep', '--trusted-public-key', upKey.publicKey]);
    expect(verified.code, verified.stdout + verified.stderr).toBe(0);
    expect(await temps()).toEqual([]);

    const upstreamNars = (await upstream.narHits()).slice(upstreamMark).map((e) => e.uri);
    expect(upstreamNars.sort()).toEqual([...new Set(upstreamNars)].sort()); // each NAR once
    expect(upstreamNars).toHaveLength(main.paths.length);

    await upstream.stop();
    try {
      const piBefore = (await pi.log()).length;
      const b = await laptop(main, upstream.url, client);
      expect(b.code, b.stderr).toBe(0);
      expect(b.has(main)).toBe(true);
      // Every NAR laptop B got, nginx served from the cache directory.
      const served = (await pi.log()).slice(piBefore).filter((e) => e.uri.startsWith('/nar/') && e.method === 'GET');
      expect(served).toHaveLength(main.paths.length);
      expect(served.every((e) => e.status === 200)).toBe(true);
    } finally {
      await upstream.start();
    }
    const stats = (await (await fetch(`${fill.url}/_/stats`)).json()) as Record<string, number>;
    expect(stats.pathsFilled! - filledBefore).toBe(main.paths.length);
  });

  for (const client of NIX_CLIENTS) it(`${client.name}: a closure upstream signs with a key fill does not trust: the Pi answers 404 and stores nothing; the laptop gets it from upstream`, async () => {
    const mark = fill.logs.length;
    const c = await laptop(untrusted, upstream.url, client);
    expect(c.code, c.stderr).toBe(0);
    expect(c.has(untrusted)).toBe(true);
    expect(untrusted.paths.some((p) => existsSync(narinfoOf(p)))).toBe(false);
    expect(fill.logs.slice(mark).some((l) => l.event === 'untrusted-narinfo')).toBe(true);
  });

  // A corrupt NAR on the first try is the hold-back work (issue 22 item 4): left as it was, with Nix 2.8.
  it('a NAR that does not match its signed narinfo: the Pi publishes nothing and aborts the stream; the next laptop gets the path from another cache', async () => {
    // Nix unpacks as it downloads: the flipped byte fails its xz decoder before the end, as it would straight from that upstream.
    const first = await laptop(corrupt, goodCopy.url);
    if (first.code !== 0) expect(first.stderr).toMatch(/Corrupted input data|hash mismatch|transfer/i);
    await until('fill logged the mismatch', 30_000, () => fill.logs.some((l) => l.event === 'fill-hash-mismatch'));
    // For a while the Pi answers that path as a miss, so the next laptop takes it from elsewhere.
    const second = await laptop(corrupt, goodCopy.url);
    expect(second.code, second.stderr).toBe(0);
    expect(second.has(corrupt)).toBe(true);
    expect(corrupt.paths.some((p) => existsSync(narinfoOf(p)))).toBe(false);
    expect((await checkCache(piCache)).problems).toEqual([]);
    expect(await temps()).toEqual([]);
  });

  for (const client of NIX_CLIENTS) it(`${client.name}: fill killed with SIGKILL in the middle of a 40 MB NAR: no narinfo without its NAR; the restarted fill removes the dead temporary and the next request fills it again`, async () => {
    const big = bigOf[client.suite]!;
    const leaf = big.paths.find((p) => p !== big.root)!;
    const first = laptop(big, upstream.url, client); // runs on: its proxy has nowhere else to go once the Pi breaks off
    await until('fill has written 8 MB of the big NAR', 60_000, async () => {
      for (const t of await temps()) {
        const size = (await readFile(join(piCache, t)).catch(() => Buffer.alloc(0))).length;
        if (size > 8_000_000) return true;
      }
      return false;
    });
    await fill.stop('SIGKILL');
    expect(existsSync(narinfoOf(leaf))).toBe(false);
    expect((await checkCache(piCache)).problems).toEqual([]);
    expect((await temps()).length).toBeGreaterThan(0); // what the dead fill left

    fill = await startFill(fillArgs(), fill.port);
    expect(fill.logs.find((l) => l.event === 'fill-temps-removed')).toBeTruthy();
    expect(await temps()).toEqual([]);
    await first; // however it ended, it must end

    const again = await laptop(big, upstream.url, client);
    expect(again.code, again.stderr).toBe(0);
    await until('the Pi published the big closure', 60_000, () => piHas(big));
    expect((await checkCache(piCache)).problems).toEqual([]);
  });
});

describe('fill on a full disk', () => {
  let dir: string;
  let mnt: string;
  let mounted = false;

  beforeAll(async () => {
    dir = await tempDir('fill-full');
    mnt = join(dir, 'tmpfs');
    await mkdir(mnt);
    await runOk('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]);
    mounted = true;
  });
  afterAll(async () => {
    await stopAll();
    if (mounted) await run('umount', [mnt]);
    if (dir) await removeDir(dir);
  });

  it(`the cache is a 1 MB tmpfs: laptops (${NIX_CLIENTS.map((c) => c.name).join(', ')}) are still served, nothing half-written is left, the log says the disk is full`, async () => {
    const key = await generateKey(dir, 'upstream-1');
    const closure = await buildClosure(`fill-full-${process.pid}`, [{ name: 'leaf', size: 3_000_000 }]);
    const upDir = join(dir, 'upstream');
    await makeStaticCache(upDir, closure.paths, key, 'zstd');
    const up = await Nginx.start({ root: upDir, workDir: join(dir, 'nginx-up') });
    const fill = await startFill(['--cache', mnt, '--upstream', up.url, '--trusted-public-key', key.publicKey]);
    const pi = await startPiNginx(join(dir, 'nginx-pi'), mnt, fill.port);
    const config = join(dir, 'laptop.json');
    await writeFile(config, JSON.stringify({ timeouts: { lan: { hedgeMs: 0, firstByteMs: 15_000 } } }));
    const proxy = await startProxy(['--no-mdns', '--lan', pi.url, '--upstream', up.url, '--trusted-public-key', key.publicKey, '--config', config]);
    try {
      for (const client of NIX_CLIENTS) {
        const mark = (await pi.log()).length;
        const laptop = join(dir, `laptop-${client.suite}`);
        const res = await substitute(laptop, [closure.root], proxy.url, { client, xdgCache: join(dir, `xdg-${client.suite}`), trustedKeys: [key.publicKey] });
        expect(res.code, `${client.name}: ${res.stderr}`).toBe(0);
        expect(closure.paths.every((p) => existsSync(join(laptop, p)))).toBe(true);
        // Laptop got the leaf through the Pi (fill streamed it), not around it.
        expect((await pi.log()).slice(mark).some((e) => e.uri.startsWith('/nar/') && e.status === 200 && e.bytes > 2_000_000), client.name).toBe(true);
      }
      const full = fill.logs.find((l) => l.event === 'fill-not-stored');
      expect(String(full?.reason)).toMatch(/disk is full/);
      expect(fill.child.exitCode).toBeNull();
      const left = [...(await readdir(mnt)), ...(await readdir(join(mnt, 'nar'))).map((n) => `nar/${n}`)];
      expect(left.filter((n) => n.split('/').pop()!.startsWith('.tmp-'))).toEqual([]);
      expect((await checkCache(mnt)).problems).toEqual([]);
      expect(existsSync(join(mnt, `${closure.root.slice(11, 43)}.narinfo`))).toBe(false);
    } finally {
      await proxy.stop();
      await fill.stop();
      await pi.stop();
      await up.stop();
    }
  });
});
