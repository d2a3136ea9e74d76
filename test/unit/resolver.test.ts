import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Breaker } from '../../src/origins/breaker.js';
import type { NarInfoLookup, Origin, OriginKind } from '../../src/origins/origin.js';
import { OriginSet } from '../../src/origins/origin-set.js';
import { parseNarInfo } from '../../src/protocol/narinfo.js';
import { NarInfoResolver } from '../../src/server/narinfo-resolver.js';
import { Stats } from '../../src/stats/recorder.js';
import { fetchesNothing } from '../helpers/lookup-origin.js';

const HASH = '3kklkssmzr75mhpv3s4qw1m26y4w6zrn';
const INFO = parseNarInfo(`StorePath: /nix/store/${HASH}-x
URL: nar/03lzs95hsqhn8i2krdmlvw8r1q6mfcjrzg2cp18saf5a0f9f3jdn.nar.xz
Compression: xz
NarHash: sha256:1z36l1l7cvc7d3x3y814zv4pdgx17j6i2i8ml4japbpzwc5yh155
NarSize: 120
References: 
`);

/** A unit-test stand-in for an origin: answers `answer` after `delayMs`. */
function fakeOrigin(name: string, kind: OriginKind, answer: NarInfoLookup['status'], delayMs: number, fills = false): Origin & { asked: number; breaker: Breaker } {
  const breaker = new Breaker({ maxFails: 1, probeIntervalMs: 60_000 }, async () => false);
  const result: NarInfoLookup =
    answer === 'present' ? { status: 'present', info: INFO, trustedBy: 'k' } : answer === 'absent' ? { status: 'absent', reason: 'not-found' } : { status: 'unknown', cause: 'timeout', reason: 'timeout' };
  return {
    id: name,
    name,
    kind,
    fills,
    baseUrl: `http://${name}/`,
    priority: 10,
    breaker,
    asked: 0,
    async lookupNarInfo() {
      this.asked++;
      await new Promise((r) => setTimeout(r, delayMs));
      return result;
    },
    ...fetchesNothing,
    async close() {
      breaker.close();
    },
  };
}

function resolver(origins: Origin[], hedgeMs = 50) {
  return new NarInfoResolver(new OriginSet(origins), { maxEntries: 100, hitTtlSeconds: 60, missTtlSeconds: 60, hedgeMs: { lan: hedgeMs, peer: hedgeMs, upstream: 0 } }, new Stats(), pino({ level: 'silent' }));
}

/**
 * Time is faked: each test says when each origin answers and checks when the
 * resolver answered, to the millisecond, whatever the machine's load.
 */
beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

/** Starts `p` now; `at()` is the fake time it settled after, undefined while pending. */
function track<T>(p: Promise<T>): { result: Promise<T>; at(): number | undefined } {
  const start = Date.now();
  let at: number | undefined;
  const result = p.finally(() => (at = Date.now() - start));
  return { result, at: () => at };
}

describe('narinfo routing: LAN first, upstream next, hedged when the LAN is slow', () => {
  it('a Pi that hangs costs the hedge delay, not its whole timeout: upstream answers', async () => {
    const pi = fakeOrigin('pi', 'lan', 'unknown', 1500);
    const up = fakeOrigin('up', 'upstream', 'present', 5);
    const t = track(resolver([pi, up]).resolve(HASH));
    await vi.advanceTimersByTimeAsync(55);
    expect(t.at()).toBe(55); // hedge delay 50 ms + upstream's 5 ms
    const r = await t.result;
    expect(r.status === 'found' && r.origin.name).toBe('up');
  });

  it('a slow Pi that answers before upstream still wins', async () => {
    const pi = fakeOrigin('pi', 'lan', 'present', 120);
    const up = fakeOrigin('up', 'upstream', 'present', 400);
    const t = track(resolver([pi, up]).resolve(HASH));
    await vi.advanceTimersByTimeAsync(120);
    expect(t.at()).toBe(120);
    const r = await t.result;
    expect(r.status === 'found' && r.origin.name).toBe('pi');
    expect(up.asked).toBe(1); // hedged: upstream was asked alongside
  });

  it('a quick Pi is asked alone', async () => {
    const pi = fakeOrigin('pi', 'lan', 'present', 1);
    const up = fakeOrigin('up', 'upstream', 'present', 1);
    const t = track(resolver([pi, up]).resolve(HASH));
    await vi.advanceTimersByTimeAsync(1);
    const r = await t.result;
    expect(r.status === 'found' && r.origin.name).toBe('pi');
    expect(up.asked).toBe(0);
  });

  it('"absent" everywhere is missing; "couldn\'t ask" somewhere is unavailable; both answer 404 upstream of here', async () => {
    const missing = track(resolver([fakeOrigin('pi', 'lan', 'absent', 1), fakeOrigin('up', 'upstream', 'absent', 1)]).resolve(HASH));
    const unavailable = track(resolver([fakeOrigin('pi', 'lan', 'unknown', 1), fakeOrigin('up', 'upstream', 'absent', 1)]).resolve(HASH));
    await vi.advanceTimersByTimeAsync(10);
    expect((await missing.result).status).toBe('missing');
    expect(await unavailable.result).toMatchObject({ status: 'unavailable', unknown: ['pi: timeout'] });
  });

  it('an open circuit is skipped without asking; cached misses are forgotten when an origin comes back', async () => {
    const pi = fakeOrigin('pi', 'lan', 'present', 1);
    const up = fakeOrigin('up', 'upstream', 'absent', 1);
    const res = resolver([pi, up]);
    pi.breaker.trip('test');
    const ask = async () => {
      const t = track(res.resolve(HASH));
      await vi.advanceTimersByTimeAsync(5);
      return t.result;
    };
    expect((await ask()).status).toBe('unavailable');
    expect(pi.asked).toBe(0);
    expect((await ask()).status).toBe('unavailable'); // cached miss
    expect(up.asked).toBe(1);
    pi.breaker.success(); // the probe brought it back
    const r = await ask();
    expect(r.status === 'found' && r.origin.name).toBe('pi');
    pi.breaker.close();
  });
});

describe('a LAN cache that went slow', () => {
  it('is not waited on again: the next lookups ask upstream alongside at once, until it answers', async () => {
    const pi = fakeOrigin('pi', 'lan', 'present', 400);
    const up = fakeOrigin('up', 'upstream', 'present', 5);
    const res = resolver([pi, up], 100);
    const first = track(res.resolve(HASH));
    await vi.advanceTimersByTimeAsync(105);
    expect(first.at()).toBe(105); // waited the hedge delay once, then upstream's 5 ms
    const r1 = await first.result;
    expect(r1.status === 'found' && r1.origin.name).toBe('up');
    const second = track(res.resolve(HASH.replace(/^3/, '4'))); // another path, not in the cache
    await vi.advanceTimersByTimeAsync(5);
    expect(second.at()).toBe(5); // no second wait
    // Once the Pi has answered (its first lookup, at 400 ms), it is waited on (for the hedge delay) as before.
    await vi.advanceTimersByTimeAsync(400);
    expect(pi.asked).toBe(2);
    const third = track(res.resolve(HASH.replace(/^3/, '5')));
    await vi.advanceTimersByTimeAsync(105);
    expect(third.at()).toBe(105);
    await third.result;
  });
});

describe('a LAN cache that comes back up', () => {
  it('is waited on again at once, not raced against upstream from a stale "slow" mark', async () => {
    const pi = fakeOrigin('pi', 'lan', 'present', 150);
    const up = fakeOrigin('up', 'upstream', 'present', 5);
    const res = resolver([pi, up], 100);
    const first = track(res.resolve(HASH));
    await vi.advanceTimersByTimeAsync(105);
    const r1 = await first.result;
    expect(r1.status === 'found' && r1.origin.name).toBe('up'); // slower than the hedge: marked slow
    pi.breaker.trip('link down');
    pi.breaker.success(); // the probe brought it back: the 'up' event clears the mark
    const again = track(res.resolve(HASH.replace(/^3/, '6')));
    await vi.advanceTimersByTimeAsync(105);
    expect(again.at()).toBe(105); // waited the hedge delay instead of racing at once
    const r2 = await again.result;
    expect(r2.status === 'found' && r2.origin.name).toBe('up');
    pi.breaker.close();
  });
});

describe('a LAN cache that fills from upstream (fill=1, --lan-fill): waited for, not raced', () => {
  const hedge = 200;
  it('a filling Pi that takes 1.5 s (it is asking upstream itself) is waited for: upstream is never asked, the Pi answers', async () => {
    const pi = fakeOrigin('pi', 'lan', 'present', 1500, true);
    const up = fakeOrigin('up', 'upstream', 'present', 5);
    const t = track(resolver([pi, up], hedge).resolve(HASH));
    await vi.advanceTimersByTimeAsync(1500);
    const r = await t.result;
    expect(r.status === 'found' && r.origin.name).toBe('pi');
    expect(t.at()).toBe(1500);
    expect(up.asked).toBe(0);
  });

  it('the same Pi without the fill flag is raced after the hedge delay: upstream is asked too (the double download)', async () => {
    const pi = fakeOrigin('pi', 'lan', 'present', 1500);
    const up = fakeOrigin('up', 'upstream', 'present', 5);
    const t = track(resolver([pi, up], hedge).resolve(HASH));
    await vi.advanceTimersByTimeAsync(1500);
    const r = await t.result;
    expect(r.status === 'found' && r.origin.name).toBe('up');
    expect(t.at()).toBe(205);
  });

  it("Pi's internet down: fill answers a quick 404, and the laptop asks upstream at once", async () => {
    const pi = fakeOrigin('pi', 'lan', 'absent', 10, true);
    const up = fakeOrigin('up', 'upstream', 'present', 5);
    const t = track(resolver([pi, up], hedge).resolve(HASH));
    await vi.advanceTimersByTimeAsync(15);
    const r = await t.result;
    expect(r.status === 'found' && r.origin.name).toBe('up');
    expect(t.at()).toBe(15);
  });

  it('a filling Pi that hangs costs its first-byte timeout once: its circuit opens and the next lookups go straight to upstream', async () => {
    const pi = fakeOrigin('pi', 'lan', 'unknown', 5000, true);
    // As HttpOrigin does: a first-byte timeout counts as a failure, and one opens a LAN cache's circuit.
    const lookup = pi.lookupNarInfo.bind(pi);
    pi.lookupNarInfo = async (h) => {
      const r = await lookup(h);
      if (r.status === 'unknown') pi.breaker.failure(r.reason);
      return r;
    };
    const up = fakeOrigin('up', 'upstream', 'present', 5);
    const res = resolver([pi, up], hedge);
    const first = track(res.resolve(HASH));
    await vi.advanceTimersByTimeAsync(5005);
    const r = await first.result;
    expect(r.status === 'found' && r.origin.name).toBe('up');
    expect(first.at()).toBe(5005);
    expect(pi.breaker.isOpen).toBe(true);

    const second = track(res.resolve('1kklkssmzr75mhpv3s4qw1m26y4w6zrn'));
    await vi.advanceTimersByTimeAsync(5);
    await second.result;
    expect(second.at()).toBe(5);
    expect(pi.asked).toBe(1);
  });
});
