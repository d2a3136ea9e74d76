import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { openWithin } from '../../src/nar/head-deadline.js';
import { openNar } from '../../src/nar/nar-source.js';
import { awakeFor, settledUnlessQuiet } from '../../src/origins/awake-wait.js';
import { HttpOrigin } from '../../src/origins/http-origin.js';
import { OriginSet } from '../../src/origins/origin-set.js';
import { TrustedKeys } from '../../src/protocol/signing.js';
import { NarInfoResolver } from '../../src/server/narinfo-resolver.js';
import { Stats } from '../../src/stats/recorder.js';
import { behave, startFakeCache, type Behaviour, type FakeCache } from '../helpers/fake-cache.js';
import { memoryKey, narFixture, narinfoFor, type NarFixture } from '../helpers/nar-fixtures.js';

/**
 * The proxy's deadlines on a LAN cache (the narinfo hedge and the NAR head
 * deadline, 200 ms) on a laptop that is busy (a build on every core: the
 * proxy does not run for a while) and over a link that is busy (the Pi
 * answers, but this answer waits behind others). Either way the Pi answers:
 * it must not be taken for a Pi that went quiet and left for upstream
 * (issue 22: a home link, 16 NARs at once, never upstream while the Pi
 * answers). A Pi that really went quiet still costs one deadline.
 */
const HEDGE_MS = 200;
/** The Pi's own first-byte timeout, far above what the deadlines may cost: a bound that holds on a loaded machine. */
const FIRST_BYTE_MS = 10_000;
const TIMEOUTS = { connectMs: 1000, firstByteMs: FIRST_BYTE_MS, bodyIdleMs: FIRST_BYTE_MS, probeIntervalMs: 60_000, maxFails: 1, hedgeMs: HEDGE_MS };

/** The laptop is too busy to run the proxy: its event loop is blocked for `ms`. */
function busy(ms: number): void {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    // a build on every core
  }
}

/** `behaviour`, `ms` later. */
const after = (ms: number, behaviour: Behaviour = behave.ok()): Behaviour => (req, res, body) => void setTimeout(() => void behaviour(req, res, body), ms);

interface Home {
  paths: NarFixture[];
  pi: FakeCache;
  upstream: FakeCache;
  piOrigin: HttpOrigin;
  resolver: NarInfoResolver;
  /** The Pi's NAR file URL for a path (Compression: none). */
  narUrl(f: NarFixture): string;
  narinfoRequests(cache: FakeCache, f: NarFixture): number;
}

let closeAll: (() => Promise<void>) | undefined;
afterEach(async () => {
  await closeAll?.();
  closeAll = undefined;
});

/** `count` paths on a fake Pi and a fake upstream, both signed and trusted; a resolver that hedges the Pi at 200 ms. */
async function home(count: number): Promise<Home> {
  const paths = Array.from({ length: count }, (_, i) => narFixture(20_000, `p${i}`));
  const piKey = memoryKey('pi.lan-1');
  const upKey = memoryKey('upstream-1');
  const [pi, upstream] = await Promise.all([startFakeCache(), startFakeCache()]);
  const urls = new Map<string, string>();
  for (const [cache, key] of [[pi, piKey], [upstream, upKey]] as const) {
    for (const f of paths) {
      const { text, url } = narinfoFor(f, f.nar, 'none', key);
      cache.files.set(`${f.storeHash}.narinfo`, { body: Buffer.from(text), behaviour: behave.ok() });
      cache.files.set(url, { body: f.nar, behaviour: behave.ok() });
      if (cache === pi) urls.set(f.storeHash, url);
    }
  }
  const log = pino({ level: 'silent' });
  const trusted = new TrustedKeys([piKey.publicKey, upKey.publicKey]);
  const piOrigin = new HttpOrigin({ url: pi.url, kind: 'lan', name: 'pi', priority: 10, timeouts: TIMEOUTS, trusted, log });
  const upOrigin = new HttpOrigin({ url: upstream.url, kind: 'upstream', name: 'upstream', timeouts: { ...TIMEOUTS, hedgeMs: 0 }, trusted, log });
  const origins = new OriginSet([piOrigin, upOrigin]);
  const resolver = new NarInfoResolver(origins, { maxEntries: 1000, hitTtlSeconds: 60, missTtlSeconds: 0, hedgeMs: { lan: HEDGE_MS, peer: HEDGE_MS, upstream: 0 } }, new Stats(), log);
  closeAll = async () => {
    await origins.close();
    await Promise.all([pi.close(), upstream.close()]);
  };
  return {
    paths,
    pi,
    upstream,
    piOrigin,
    resolver,
    narUrl: (f) => urls.get(f.storeHash)!,
    narinfoRequests: (cache, f) => cache.requests.filter((r) => r.url === `${f.storeHash}.narinfo`).length,
  };
}

const originOf = (r: Awaited<ReturnType<NarInfoResolver['resolve']>>) => (r.status === 'found' ? r.origin.name : r.status);

describe('a laptop too busy to run the proxy for a while does not make the Pi slow (origins/awake-wait.ts)', () => {
  it('a wait whose timer fires late (the loop was blocked) does not count: another window starts', async () => {
    const started = Date.now();
    setTimeout(() => busy(400), 10);
    await awakeFor(100);
    // The first window ended with the block at ~410 ms, 300 ms late: it did not count; the second did.
    expect(Date.now() - started).toBeGreaterThanOrEqual(500);
  });

  it('narinfo: the Pi answers in 30 ms, the proxy does not run from 10 to 410 ms: the answer is the Pi\'s, upstream is never asked', async () => {
    const h = await home(1);
    const [f] = h.paths as [NarFixture];
    h.pi.files.get(`${f.storeHash}.narinfo`)!.behaviour = after(30);
    setTimeout(() => busy(400), 10);
    const r = await h.resolver.resolve(f.storeHash);
    expect(originOf(r)).toBe('pi');
    expect(h.narinfoRequests(h.upstream, f)).toBe(0);
  });

  it('NAR: the Pi sends its head in 30 ms, the proxy does not run from 10 to 410 ms: the NAR opens from the Pi', async () => {
    const h = await home(1);
    const [f] = h.paths as [NarFixture];
    h.pi.files.get(h.narUrl(f))!.behaviour = after(30);
    setTimeout(() => busy(400), 10);
    const opened = await openWithin(openNar, h.piOrigin, { url: h.narUrl(f), compression: 'none' }, new AbortController().signal, HEDGE_MS);
    expect(opened.ok).toBe(true);
    if (opened.ok) opened.nar.close();
  });
});

describe('a Pi busy answering other requests (a busy link) is waited for; a quiet one is not', () => {
  /** Lookups of paths[1..] answered every 50 ms by the Pi while `during` runs: the Pi is busy, not gone. */
  async function whileBusy<T>(h: Home, during: Promise<T>): Promise<T> {
    let done = false;
    const others = (async () => {
      for (let i = 1; i < h.paths.length && !done; i++) {
        await h.resolver.resolve(h.paths[i]!.storeHash);
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    try {
      return await during;
    } finally {
      done = true;
      await others;
    }
  }

  it("NAR: this head comes 600 ms late while the link carries another NAR's bytes (no other head): the NAR opens from the Pi", async () => {
    const h = await home(2);
    const [f, other] = h.paths as [NarFixture, NarFixture];
    // The other NAR streams for a second, 2 kB every 20 ms, all the while this head waits behind it.
    h.pi.files.set(h.narUrl(other), { body: Buffer.alloc(100_000, 1), behaviour: behave.drip(2000, 20, 2000) });
    h.pi.files.get(h.narUrl(f))!.behaviour = after(600);
    const streaming = await openNar(h.piOrigin, { url: h.narUrl(other), compression: 'none' }, new AbortController().signal);
    expect(streaming.ok).toBe(true);
    const reading = streaming.ok ? (async () => { for await (const _ of streaming.nar.chunks); })().catch(() => {}) : undefined;
    const opened = await openWithin(openNar, h.piOrigin, { url: h.narUrl(f), compression: 'none' }, new AbortController().signal, HEDGE_MS);
    expect(opened.ok).toBe(true);
    if (opened.ok) opened.nar.close();
    if (streaming.ok) streaming.nar.close();
    await reading;
  });

  it("narinfo: this answer takes 600 ms while the Pi answers others: not hedged, the answer is the Pi's", async () => {
    const h = await home(30);
    const [f] = h.paths as [NarFixture];
    h.pi.files.get(`${f.storeHash}.narinfo`)!.behaviour = after(600);
    const r = await whileBusy(h, h.resolver.resolve(f.storeHash));
    expect(originOf(r)).toBe('pi');
    expect(h.narinfoRequests(h.upstream, f)).toBe(0);
  });

  it('narinfo: a Pi that answers nothing at all is left after one hedge delay: upstream answers', async () => {
    const h = await home(1);
    const [f] = h.paths as [NarFixture];
    h.pi.files.get(`${f.storeHash}.narinfo`)!.behaviour = () => {}; // never answers
    const started = Date.now();
    const r = await h.resolver.resolve(f.storeHash);
    expect(originOf(r)).toBe('upstream');
    // One hedge delay (windows in which this loaded machine did not run the proxy do not count), far from the Pi's timeout.
    expect(Date.now() - started).toBeLessThan(HEDGE_MS + 1500);
  });

  it('narinfo: a Pi that answers others but never this one is left after at most four hedge delays', async () => {
    const h = await home(30);
    const [f] = h.paths as [NarFixture];
    h.pi.files.get(`${f.storeHash}.narinfo`)!.behaviour = () => {};
    const started = Date.now();
    const r = await whileBusy(h, h.resolver.resolve(f.storeHash));
    expect(originOf(r)).toBe('upstream');
    expect(Date.now() - started).toBeGreaterThanOrEqual(HEDGE_MS);
    expect(Date.now() - started).toBeLessThan(4 * HEDGE_MS + 1500);
  });

  it('a wait on an origin that answers nothing gives up after one window; one that keeps answering, after the most windows allowed', async () => {
    const quiet = { lastSuccessAt: 0 };
    const started = Date.now();
    expect(await settledUnlessQuiet(new Promise(() => {}), quiet, 50, 10)).toBeUndefined();
    expect(Date.now() - started).toBeLessThan(250);
    const chatty = {
      get lastSuccessAt() {
        return Date.now();
      },
    };
    const t = Date.now();
    expect(await settledUnlessQuiet(new Promise(() => {}), chatty, 50, 3)).toBeUndefined();
    expect(Date.now() - t).toBeGreaterThanOrEqual(150);
    expect(await settledUnlessQuiet(Promise.resolve(7), quiet, 50, 3)).toEqual({ value: 7 });
  });
});
