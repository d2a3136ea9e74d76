import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { HttpOrigin } from '../../src/origins/http-origin.js';
import { OriginSet } from '../../src/origins/origin-set.js';
import { DEFAULT_TIMEOUTS } from '../../src/origins/timeouts.js';
import { TrustedKeys, type SecretKey } from '../../src/protocol/signing.js';
import { buildApp } from '../../src/server/app.js';
import { NarInfoResolver, type ResolverOptions } from '../../src/server/narinfo-resolver.js';
import { Stats } from '../../src/stats/recorder.js';
import { countingCache, narinfo, newKey, storeHash, type CountingCache } from '../helpers/counting-cache.js';

const silent = pino({ level: 'silent' });

const opened: Array<{ close(): Promise<void> }> = [];
afterEach(async () => {
  for (const x of opened.splice(0).reverse()) await x.close();
});

async function proxy(caches: Array<{ cache: CountingCache; kind: 'lan' | 'upstream' }>, keys: SecretKey[], prefetch: ResolverOptions['prefetch'], extra: Partial<ResolverOptions> = {}) {
  const trusted = new TrustedKeys(keys.map((k) => k.publicKey));
  const origins = new OriginSet(
    caches.map(({ cache, kind }, i) => new HttpOrigin({ url: cache.url, kind, name: `${kind}${i}`, priority: 10 + i, timeouts: DEFAULT_TIMEOUTS[kind], trusted, log: silent })),
  );
  const stats = new Stats();
  const resolver = new NarInfoResolver(origins, { maxEntries: 10_000, hitTtlSeconds: 60, missTtlSeconds: 60, hedgeMs: { lan: 200, peer: 200, upstream: 0 }, prefetch, ...extra }, stats, silent);
  const app: FastifyInstance = buildApp({ config: { priority: 30, lan: [], upstream: [], trustedPublicKeys: [] }, origins, resolver, stats, log: silent });
  opened.push({ close: () => app.close() }, { close: () => origins.close() });
  const ask = (hash: string) => app.inject({ method: 'GET', url: `/${hash}.narinfo` });
  /** Resolves when the prefetch queue is empty and nothing runs (bounded by vitest's test timeout). */
  const settled = async () => {
    for (;;) {
      await new Promise((r) => setImmediate(r));
      const p = resolver.prefetcher.pending;
      if (p.queued === 0 && p.running === 0) return;
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  return { app, ask, stats, resolver, settled };
}

/** root -> a[i] -> b[i]: a closure three levels deep, signed by `key`. */
function closure(width: number, key: SecretKey) {
  const a = Array.from({ length: width }, storeHash);
  const b = Array.from({ length: width }, storeHash);
  const root = storeHash();
  const files = new Map<string, string>([[root, narinfo(root, [root, ...a], key)]]);
  a.forEach((h, i) => files.set(h, narinfo(h, [b[i]!], key)));
  b.forEach((h) => files.set(h, narinfo(h, [], key)));
  return { root, a, b, files };
}

describe('narinfo prefetch: the next level of the closure is asked before Nix asks', () => {
  it("Nix asks for the root: the proxy fetches its references' narinfos, and serves them from memory when Nix asks", async () => {
    const key = newKey('pi.lan-1');
    const c = closure(5, key);
    const pi = await countingCache(c.files);
    opened.push(pi);
    const { ask, stats, settled } = await proxy([{ cache: pi, kind: 'lan' }], [key], { concurrency: 4, depth: 1 });

    expect((await ask(c.root)).statusCode).toBe(200);
    await pi.untilRequests(1 + c.a.length); // the root, then every reference, with no further request from Nix
    await settled();
    for (const h of c.a) expect(pi.asked(h)).toBe(1);
    // One level ahead only: the references of the references wait until Nix asks for their parents.
    for (const h of c.b) expect(pi.asked(h)).toBe(0);

    const before = pi.requests.length;
    for (const h of c.a) {
      const res = await ask(h);
      expect(res.statusCode).toBe(200);
      expect(res.body).toContain(`StorePath: /nix/store/${h}-p`);
    }
    expect(pi.requests.slice(before).filter((p) => c.a.some((h) => p === `${h}.narinfo`))).toEqual([]); // from memory
    expect(stats.state.narinfoPrefetch).toMatchObject({ used: c.a.length });
    expect(stats.state.narinfoCache.found).toBe(c.a.length);
    // Stats keep client requests apart from prefetches: Nix asked 6 narinfos; 5 + 5 were prefetched.
    expect(stats.state.total.client.narinfo.found).toBe(1 + c.a.length);
    await settled();
    expect(stats.state.narinfoPrefetch.lookups).toBe(c.a.length + c.b.length);
    for (const h of c.b) expect(pi.asked(h)).toBe(1);
  });

  it('depth 2 also fetches the references of the references', async () => {
    const key = newKey('pi.lan-1');
    const c = closure(4, key);
    const pi = await countingCache(c.files);
    opened.push(pi);
    const { ask, settled } = await proxy([{ cache: pi, kind: 'lan' }], [key], { concurrency: 4, depth: 2 });
    expect((await ask(c.root)).statusCode).toBe(200);
    await pi.untilRequests(1 + c.a.length + c.b.length);
    await settled();
    for (const h of [...c.a, ...c.b]) expect(pi.asked(h)).toBe(1);
  });

  it('a prefetched narinfo that fails its signature check is never served: the next origin answers, or Nix gets 404', async () => {
    const piKey = newKey('pi.lan-1');
    const upKey = newKey('upstream-1');
    const forger = newKey('pi.lan-1'); // same name, another key: the signature does not verify
    const c = closure(2, piKey);
    const [forged, unsigned] = c.a as [string, string];
    const piFiles = new Map(c.files);
    piFiles.set(forged, narinfo(forged, [c.b[0]!], forger));
    piFiles.set(unsigned, piFiles.get(unsigned)!.replace(/^Sig: .*\n/m, ''));
    const upFiles = new Map<string, string>([[forged, narinfo(forged, [c.b[0]!], upKey)]]); // the upstream has a good one of the first only
    const pi = await countingCache(piFiles);
    const up = await countingCache(upFiles);
    opened.push(pi, up);
    const { ask, settled } = await proxy([{ cache: pi, kind: 'lan' }, { cache: up, kind: 'upstream' }], [piKey, upKey], { concurrency: 4, depth: 1 });

    expect((await ask(c.root)).statusCode).toBe(200);
    await pi.untilRequests(3);
    await settled();
    expect(pi.asked(forged)).toBe(1);
    expect(up.asked(forged)).toBe(1); // the prefetch moved on to the next origin, as a client lookup does

    const first = await ask(forged);
    expect(first.statusCode).toBe(200);
    expect(first.headers['x-nix-lan-cache-origin']).toBe('upstream1');
    expect(first.body).toContain('Sig: upstream-1:');
    expect(first.body).not.toContain(piFiles.get(forged)!.match(/^Sig: (.*)$/m)![1]);

    const second = await ask(unsigned);
    expect(second.statusCode).toBe(404);
    expect(second.body).not.toContain('StorePath');
  });

  it('a closure wider than the queue does not explode concurrency or memory: lookups at most `concurrency` at once, the rest dropped and counted', async () => {
    const key = newKey('pi.lan-1');
    const c = closure(600, key);
    const pi = await countingCache(c.files);
    opened.push(pi);
    for (const h of c.a) pi.held.add(h); // the Pi is slow: every prefetch hangs until released
    const { ask, stats, resolver, settled } = await proxy([{ cache: pi, kind: 'lan' }], [key], { concurrency: 3, depth: 1, maxQueued: 100 });

    expect((await ask(c.root)).statusCode).toBe(200);
    await pi.untilRequests(1 + 3);
    expect(resolver.prefetcher.pending).toEqual({ queued: 97, running: 3 });
    expect(stats.state.narinfoPrefetch.dropped).toBe(500);

    // Meanwhile Nix's own requests don't wait behind the queue: a queued path is looked up at once by the client.
    const queued = c.a[50]!;
    pi.held.delete(queued);
    const res = await ask(queued);
    expect(res.statusCode).toBe(200);

    pi.release();
    await settled();
    expect(pi.maxOpen).toBeLessThanOrEqual(3 + 1); // three prefetches and the client's own lookup
    expect(stats.state.narinfoPrefetch.lookups).toBe(100);
    const asked = c.a.filter((h) => pi.asked(h) > 0).length;
    expect(asked).toBe(100);
  });

  it("a path Nix asks for while its prefetch is on the way joins it: one request at the origin", async () => {
    const key = newKey('pi.lan-1');
    const c = closure(1, key);
    const pi = await countingCache(c.files);
    opened.push(pi);
    pi.held.add(c.a[0]!);
    const { ask, stats, settled } = await proxy([{ cache: pi, kind: 'lan' }], [key], { concurrency: 2, depth: 1 });
    expect((await ask(c.root)).statusCode).toBe(200);
    await pi.untilRequests(2);
    const answer = ask(c.a[0]!);
    await new Promise((r) => setTimeout(r, 20)); // give the client request time to arrive and join
    pi.release();
    expect((await answer).statusCode).toBe(200);
    await settled();
    expect(pi.asked(c.a[0]!)).toBe(1);
    expect(stats.state.narinfoPrefetch.used).toBe(1);
  });

  it('prefetching is off with concurrency 0', async () => {
    const key = newKey('pi.lan-1');
    const c = closure(3, key);
    const pi = await countingCache(c.files);
    opened.push(pi);
    const { ask, settled } = await proxy([{ cache: pi, kind: 'lan' }], [key], { concurrency: 0, depth: 1 });
    expect((await ask(c.root)).statusCode).toBe(200);
    await settled();
    expect(pi.requests.filter((p) => p.endsWith('.narinfo'))).toEqual([`${c.root}.narinfo`]);
  });
});

describe('leaving home: cached answers from a Pi that stopped answering are not handed out', () => {
  it('the Pi answered a moment ago and now hangs: its cached narinfos are answered from upstream after one hedge delay', async () => {
    const piKey = newKey('pi.lan-1');
    const upKey = newKey('upstream-1');
    const c = closure(3, piKey);
    const pi = await countingCache(c.files);
    // The upstream has the same paths, signed by its own key.
    const up = await countingCache(new Map([c.root, ...c.a].map((h) => [h, narinfo(h, h === c.root ? [h, ...c.a] : [], upKey)])));
    opened.push(pi, up);
    // quietMs 0: every cached Pi answer is checked (in use, after 1 s of silence from the Pi).
    const { ask, settled } = await proxy([{ cache: pi, kind: 'lan' }, { cache: up, kind: 'upstream' }], [piKey, upKey], { concurrency: 4, depth: 1 }, { quietMs: 0 });
    expect((await ask(c.root)).headers['x-nix-lan-cache-origin']).toBe('lan0');
    await settled();

    // Leaving home: from now on the Pi accepts requests and never answers.
    for (const h of ['nix-cache-info', c.root, ...c.a, ...c.b]) pi.held.add(h);
    const t0 = Date.now();
    const root = await ask(c.root);
    expect(root.statusCode).toBe(200);
    expect(root.headers['x-nix-lan-cache-origin']).toBe('upstream1');
    expect(Date.now() - t0).toBeLessThan(700); // the hedge delay (200 ms), not the Pi's first-byte timeout (800 ms)
    for (const h of c.a) {
      const res = await ask(h);
      expect(res.statusCode).toBe(200);
      expect(res.headers['x-nix-lan-cache-origin']).toBe('upstream1'); // never a NAR URL on the Pi
    }
    pi.release();
  });
});
