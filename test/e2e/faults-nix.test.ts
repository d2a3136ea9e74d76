import { existsSync } from 'node:fs';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseNarInfo } from '../../src/protocol/narinfo.js';
import { behave, startFakeCache, type Behaviour, type FakeCache } from '../helpers/fake-cache.js';
import { NIX_CLIENTS } from '../helpers/nix-clients.js';
import { buildClosure, generateKey, makeStaticCache, nixEnv, removeDir, substitute, tempDir, type CacheKey, type Closure } from '../helpers/nix.js';
import { freePort } from '../helpers/ports.js';
import { run, stopAll, type RunResult } from '../helpers/proc.js';
import { startProxy, type ProxyProcess } from '../helpers/proxy.js';

/**
 * Issue 22 item 5: the faults of a Pi, an upstream and a network, met by real
 * Nix of every version we support through the real proxy. The Pi (xz, made by
 * `nix copy`) and the upstream (zstd) are static caches served by a server
 * written to misbehave (test/helpers/fake-cache.ts), one file at a time.
 * Clients that send HEAD, Range or hang up are raw clients, in-process:
 * test/nar/serve.test.ts, test/nar/clients.test.ts, test/nar/give-up.test.ts.
 */
const LEAVES = [{ name: 'big', size: 4_000_000 }, ...Array.from({ length: 3 }, (_, i) => ({ name: `small${i}`, size: 30_000 }))];

/** A fake cache serving every file of a static cache directory, whole and honouring Range, until told otherwise. */
async function serveDir(dir: string): Promise<FakeCache & { reset(): void; every(b: Behaviour): void }> {
  const cache = await startFakeCache();
  const files = new Map<string, Buffer>();
  for (const name of await readdir(dir, { recursive: true })) {
    if ((await stat(join(dir, name))).isFile()) files.set(name, await readFile(join(dir, name)));
  }
  const every = (b: Behaviour) => {
    for (const [name, body] of files) cache.files.set(name, { body, behaviour: b });
  };
  every(behave.ok());
  return Object.assign(cache, {
    every,
    reset() {
      every(behave.ok());
      cache.fallback = undefined;
    },
  });
}

describe('faults met by real Nix through the proxy: the Pi (xz) and the upstream (zstd) misbehave', () => {
  let dir: string;
  let closure: Closure;
  let piKey: CacheKey;
  let upKey: CacheKey;
  let pi: Awaited<ReturnType<typeof serveDir>>;
  let upstream: Awaited<ReturnType<typeof serveDir>>;
  /** The big leaf's NAR file at the Pi and at upstream (paths relative to the cache). */
  let bigAt: { pi: string; upstream: string };
  let shortUpstreamWait: string;
  let noNarPrefetch: string;
  /** No NAR prefetch, and NARs streamed as they come rather than held back until verified. */
  let streamed: string;
  const proxies: ProxyProcess[] = [];
  let n = 0;

  beforeAll(async () => {
    dir = await tempDir('faults-nix');
    closure = await buildClosure('faults-nix', LEAVES);
    piKey = await generateKey(dir, 'pi.lan-1');
    upKey = await generateKey(dir, 'upstream-1');
    await Promise.all([makeStaticCache(join(dir, 'pi'), [closure.root], piKey, 'xz'), makeStaticCache(join(dir, 'up'), [closure.root], upKey, 'zstd')]);
    [pi, upstream] = await Promise.all([serveDir(join(dir, 'pi')), serveDir(join(dir, 'up'))]);
    const big = closure.paths.find((p) => p.endsWith('-big'))!;
    const urlIn = async (cache: string) => parseNarInfo(await readFile(join(dir, cache, `${big.slice(11, 43)}.narinfo`), 'utf8')).url;
    bigAt = { pi: await urlIn('pi'), upstream: await urlIn('up') };
    // A blackholed upstream costs its first-byte timeout once (15 s by default; the rule is the same at 2 s).
    shortUpstreamWait = join(dir, 'short-upstream-wait.json');
    await writeFile(shortUpstreamWait, JSON.stringify({ timeouts: { upstream: { firstByteMs: 2000 } } }));
    noNarPrefetch = join(dir, 'no-nar-prefetch.json');
    await writeFile(noNarPrefetch, JSON.stringify({ cache: { narPrefetchBytes: 0 } }));
    streamed = join(dir, 'streamed.json');
    await writeFile(streamed, JSON.stringify({ cache: { narPrefetchBytes: 0, holdMaxSeconds: 0 } }));
  }, 600_000);

  afterEach(async () => {
    await Promise.all(proxies.splice(0).map((p) => p.stop()));
    pi.reset();
    upstream.reset();
  });
  afterAll(async () => {
    await stopAll();
    await Promise.all([pi?.close(), upstream?.close()]);
    if (dir) await removeDir(dir);
  });

  async function proxy(options: { lan?: string; config?: string } = {}): Promise<ProxyProcess> {
    const p = await startProxy([
      '--no-mdns',
      ...(options.config ? ['--config', options.config] : []),
      '--lan', options.lan ?? pi.url,
      '--upstream', upstream.url,
      '--trusted-public-key', piKey.publicKey,
      '--trusted-public-key', upKey.publicKey,
    ]);
    proxies.push(p);
    return p;
  }
  const has = (store: string, path: string) => existsSync(join(store, path));
  const failovers = (p: ProxyProcess) => p.logs.filter((l) => l.msg === 'NAR failover');
  const requestsFor = (cache: FakeCache, file: string) => cache.requests.filter((r) => r.url === file).length;

  for (const client of NIX_CLIENTS) {
    describe(client.name, () => {
      async function nix(p: ProxyProcess, timeoutMs = 120_000) {
        const store = join(dir, `store-${++n}`);
        const res = await substitute(store, [closure.root], p.url, { client, xdgCache: join(dir, `xdg-${n}`), trustedKeys: [piKey.publicKey, upKey.publicKey], timeoutMs });
        return { ...res, store };
      }
      /**
       * Nix gave up by itself (not killed by the test's timeout): a failing
       * exit status after its final error. Nix 2.34.8 sometimes dies of
       * SIGSEGV right after printing that error, when a substitution fails
       * while others are in flight (3 of 15 runs here; also seen against a
       * plain static server, without the proxy): that is its own bug, and
       * counts here when the error came first.
       */
      function expectFailedByItself(res: RunResult): void {
        if (res.signal === 'SIGSEGV' && client.release[0] === 2 && client.release[1] >= 34) return void expect(res.stderr).toMatch(/^error: /m);
        expect(res.signal, res.stderr).toBeNull();
        expect(res.code, res.stderr).not.toBe(0);
      }
      /** Whether `path` is a valid path of `store`, as this Nix sees it (a failed import may leave files behind, never a valid path). */
      async function valid(store: string, path: string): Promise<boolean> {
        const [cmd, ...args] = client.wrap(['nix-store', '--store', store, '--check-validity', path]);
        return (await run(cmd!, args, { env: nixEnv() })).code === 0;
      }

      describe('the Pi fails in the middle of the 4 MB NAR, upstream has it: nix-store -r succeeds, Nix sees no error, the rest comes from upstream', () => {
        const half = () => Math.floor(pi.files.get(bigAt.pi)!.body.length / 2);
        it.each([
          ['dies (resets the connection)', () => behave.resetAfter(half())],
          ['stalls (sends nothing more, the connection open)', () => behave.stallAfter(half())],
          ['drips (1 kB every 100 ms)', () => behave.drip(1000, 100, half())],
        ])('the Pi %s', async (_what, fault) => {
          pi.files.get(bigAt.pi)!.behaviour = fault();
          const p = await proxy();
          const res = await nix(p);
          expect(res.code, res.stderr).toBe(0);
          expect(closure.paths.every((x) => has(res.store, x))).toBe(true);
          expect(res.stderr).not.toMatch(/retrying|error/i);
          expect(failovers(p), JSON.stringify(p.logs.filter((l) => Number(l.level) >= 40).slice(-5))).not.toEqual([]);
          expect(requestsFor(upstream, bigAt.upstream)).toBeGreaterThan(0);
          pi.requests.length = 0;
          upstream.requests.length = 0;
        });
      });

      it('the Pi breaks off once in the middle of a NAR nobody else has, held back (spooled): the proxy reads the Pi again from byte 0 and Nix sees no break', async () => {
        const big = pi.files.get(bigAt.pi)!;
        big.behaviour = behave.firstThen(behave.resetAfter(Math.floor(big.body.length / 2)), behave.ok());
        upstream.every(behave.status(404));
        upstream.fallback = behave.status(404);
        // No NAR fetched ahead: Nix's own request meets the break, while the NAR is held (in a spool file: no memory budget).
        const p = await proxy({ config: noNarPrefetch });
        const mark = pi.requests.length;
        const res = await nix(p);
        expect(res.code, res.stderr).toBe(0);
        expect(closure.paths.every((x) => has(res.store, x))).toBe(true);
        expect(p.logs.some((l) => l.event === 'nar-aborted')).toBe(false);
        const narRequests = p.logs.filter((l) => l.msg === 'request' && typeof l.url === 'string' && l.url.startsWith('/nar/'));
        expect(narRequests.some((l) => l.status === 206), JSON.stringify(narRequests)).toBe(false); // no resume was needed
        expect(pi.requests.slice(mark).filter((r) => r.url === bigAt.pi && r.method === 'GET').length).toBe(2); // the break, then the whole file again
      });

      it('the Pi breaks off once in the middle of a NAR nobody else has, streamed (holdMaxSeconds 0): Nix resumes it (Range) through the proxy, and the command succeeds', async () => {
        const big = pi.files.get(bigAt.pi)!;
        big.behaviour = behave.firstThen(behave.resetAfter(Math.floor(big.body.length / 2)), behave.ok());
        upstream.every(behave.status(404));
        upstream.fallback = behave.status(404);
        // No NAR fetched ahead: Nix's own request meets the break.
        const p = await proxy({ config: streamed });
        const res = await nix(p);
        expect(res.code, res.stderr).toBe(0);
        expect(closure.paths.every((x) => has(res.store, x))).toBe(true);
        expect(p.logs.some((l) => l.event === 'nar-aborted')).toBe(true); // the proxy had nowhere to go on from: Nix saw the break
        const narRequests = p.logs.filter((l) => l.msg === 'request' && typeof l.url === 'string' && l.url.startsWith('/nar/'));
        expect(narRequests.some((l) => l.status === 206), JSON.stringify(narRequests)).toBe(true); // Nix's resume
      });

      it('the Pi sends a corrupt NAR (one byte flipped mid-file) and nobody else has it: nix-store -r fails cleanly, soon, with nothing of that path in the store; the proxy lives on', async () => {
        const file = pi.files.get(bigAt.pi)!;
        const bad = Buffer.from(file.body);
        bad[bad.length >> 1]! ^= 0x55;
        pi.files.set(bigAt.pi, { body: bad, behaviour: behave.ok() });
        upstream.every(behave.status(404));
        upstream.fallback = behave.status(404);
        try {
          const p = await proxy();
          const started = Date.now();
          const res = await nix(p, 60_000);
          expectFailedByItself(res);
          expect(Date.now() - started).toBeLessThan(30_000);
          const big = closure.paths.find((x) => x.endsWith('-big'))!;
          expect(res.stderr).toContain(big.slice(11));
          expect(await valid(res.store, big), res.stderr).toBe(false);
          expect(p.logs.some((l) => l.event === 'nar-quarantine')).toBe(true);
          expect((await fetch(`${p.url}/nix-cache-info`)).status).toBe(200);
          expect(p.child.exitCode).toBeNull();
        } finally {
          pi.files.set(bigAt.pi, file);
        }
      });

      describe('the upstream misbehaves', () => {
        let baselineMs = 0;
        beforeAll(async () => {
          const baseline = await nix(await proxy({ config: shortUpstreamWait }));
          expect(baseline.code, baseline.stderr).toBe(0);
          baselineMs = baseline.ms;
        });

        it.each([
          ['403', behave.status(403)],
          ['429', behave.status(429, 'Too Many Requests')],
          ['503', behave.status(503, 'Service Unavailable')],
          ['nothing (blackholed)', behave.silent()],
        ])('it answers %s to everything, the Pi has the closure: every NAR from the Pi, none upstream, no slower than with upstream well', async (_what, fault) => {
          upstream.every(fault);
          upstream.fallback = fault;
          upstream.requests.length = 0;
          pi.requests.length = 0;
          const res = await nix(await proxy({ config: shortUpstreamWait }));
          expect(res.code, res.stderr).toBe(0);
          expect(closure.paths.every((x) => has(res.store, x))).toBe(true);
          expect(upstream.requests.filter((r) => r.url.startsWith('nar/'))).toEqual([]);
          expect(pi.requests.filter((r) => r.url.startsWith('nar/')).length).toBe(closure.paths.length);
          expect(res.ms - baselineMs).toBeLessThan(2000);
        });

        it.each([
          ['403', behave.status(403), 10_000],
          ['429', behave.status(429, 'Too Many Requests'), 10_000],
          ['503', behave.status(503, 'Service Unavailable'), 10_000],
          ['nothing (blackholed: both away)', behave.silent(), 12_000],
        ])('it answers %s to everything and the Pi is away (refused): nix-store -r fails cleanly and soon, never a retry loop on a status Nix would wait on', async (_what, fault, boundMs) => {
          upstream.every(fault);
          upstream.fallback = fault;
          const p = await proxy({ lan: `http://127.0.0.1:${await freePort()}/`, config: shortUpstreamWait });
          const started = Date.now();
          const res = await nix(p, 60_000);
          const ms = Date.now() - started;
          expectFailedByItself(res);
          expect(res.stderr).not.toMatch(/HTTP error (429|503)|retrying/i);
          expect(ms).toBeLessThan(boundMs);
          expect(await valid(res.store, closure.root), res.stderr).toBe(false);
          expect(p.child.exitCode).toBeNull();
        });
      });

      it('both away, both blackholed (a network that drops everything): nix-store -r fails cleanly within the upstream wait, not after Nix\'s 300 s stall timeout', async () => {
        const hole = behave.silent();
        pi.every(hole);
        pi.fallback = hole;
        upstream.every(hole);
        upstream.fallback = hole;
        const p = await proxy({ config: shortUpstreamWait });
        const started = Date.now();
        const res = await nix(p, 60_000);
        expectFailedByItself(res);
        expect(Date.now() - started).toBeLessThan(12_000);
        expect(p.child.exitCode).toBeNull();
      });
    });
  }
});
