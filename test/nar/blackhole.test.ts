import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { HttpOrigin } from '../../src/origins/http-origin.js';
import { OriginSet } from '../../src/origins/origin-set.js';
import { DEFAULT_TIMEOUTS } from '../../src/origins/timeouts.js';
import { TrustedKeys } from '../../src/protocol/signing.js';
import { buildApp } from '../../src/server/app.js';
import { NarInfoResolver } from '../../src/server/narinfo-resolver.js';
import { Stats } from '../../src/stats/recorder.js';
import { blackhole } from '../helpers/ports.js';
import { memoryKey, randomStoreHash } from '../helpers/nar-fixtures.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

describe('Pi and upstream both blackholed (a network that drops everything, a captive portal before login)', () => {
  it('the first lookup waits for upstream once (a false 404 would make Nix build); the next one hears 404 at once', async () => {
    const pi = await blackhole();
    const up = await blackhole();
    cleanups.push(pi.close, up.close);
    const log = pino({ level: 'silent' });
    const trusted = new TrustedKeys([memoryKey('k-1').publicKey]);
    // Upstream's first-byte timeout shortened from 15 s so the test is quick; the rule is the same.
    const upstreamTimeouts = { ...DEFAULT_TIMEOUTS.upstream, firstByteMs: 1500 };
    const origins = new OriginSet([
      new HttpOrigin({ url: pi.url, kind: 'lan', timeouts: DEFAULT_TIMEOUTS.lan, trusted, log }),
      new HttpOrigin({ url: up.url, kind: 'upstream', timeouts: upstreamTimeouts, trusted, log }),
    ]);
    cleanups.push(() => origins.close());
    const stats = new Stats();
    const resolver = new NarInfoResolver(origins, { maxEntries: 10, hitTtlSeconds: 60, missTtlSeconds: 30, hedgeMs: { lan: 200, peer: 200, upstream: 0 } }, stats, log);
    const app = buildApp({ config: { priority: 30, lan: [], upstream: [], trustedPublicKeys: [] }, origins, resolver, stats, log });
    cleanups.push(() => app.close());

    let started = performance.now();
    const first = await app.inject({ method: 'GET', url: `/${randomStoreHash()}.narinfo` });
    const firstMs = performance.now() - started;
    expect(first.statusCode).toBe(404);
    expect(firstMs).toBeGreaterThanOrEqual(1400); // upstream was waited on, not cut short

    // The next command, other paths: both circuits are open, nobody is waited on.
    started = performance.now();
    for (let i = 0; i < 3; i++) expect((await app.inject({ method: 'GET', url: `/${randomStoreHash()}.narinfo` })).statusCode).toBe(404);
    expect(performance.now() - started).toBeLessThan(1000);
    expect(origins.ordered().map((o) => o.breaker.state)).toEqual(['open', 'open']);
  });
});
