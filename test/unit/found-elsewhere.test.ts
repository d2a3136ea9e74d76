import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Breaker } from '../../src/origins/breaker.js';
import type { NarInfoLookup, Origin, OriginKind } from '../../src/origins/origin.js';
import { OriginSet } from '../../src/origins/origin-set.js';
import { parseNarInfo } from '../../src/protocol/narinfo.js';
import { NarInfoResolver } from '../../src/server/narinfo-resolver.js';
import { Stats } from '../../src/stats/recorder.js';
import { fetchesNothing } from '../helpers/lookup-origin.js';

/**
 * The resolver's cached answers found upstream while the Pi did not answer in
 * time (issue 22): the NAR route asks a cached answer's origin first, and
 * Nix, its own narinfo cache warm, asks the proxy for NARs only. Such answers
 * must not keep the Pi's paths on upstream once the Pi answers again; an
 * answer the Pi said it lacks stays where it was found.
 */
const HASHES = ['3kklkssmzr75mhpv3s4qw1m26y4w6zrn', '4kklkssmzr75mhpv3s4qw1m26y4w6zrn', '5kklkssmzr75mhpv3s4qw1m26y4w6zrn'];
const info = (hash: string) =>
  parseNarInfo(`StorePath: /nix/store/${hash}-x
URL: nar/03lzs95hsqhn8i2krdmlvw8r1q6mfcjrzg2cp18saf5a0f9f3jdn.nar.xz
Compression: xz
NarHash: sha256:1z36l1l7cvc7d3x3y814zv4pdgx17j6i2i8ml4japbpzwc5yh155
NarSize: 120
References: 
`);

/** A stand-in origin: `answer(hash)` says what it has and after how long. */
function origin(name: string, kind: OriginKind, answer: (hash: string) => { has: boolean; ms: number }): Origin & { breaker: Breaker } {
  const breaker = new Breaker({ maxFails: 1, probeIntervalMs: 60_000 }, async () => false);
  return {
    id: name,
    name,
    kind,
    baseUrl: `http://${name}/`,
    priority: 10,
    breaker,
    async lookupNarInfo(hash): Promise<NarInfoLookup> {
      const { has, ms } = answer(hash);
      await new Promise((r) => setTimeout(r, ms));
      breaker.success();
      return has ? { status: 'present', info: info(hash), trustedBy: 'k' } : { status: 'absent', reason: 'not-found' };
    },
    ...fetchesNothing,
    async close() {
      breaker.close();
    },
  };
}

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

const from = (r: NarInfoResolver, hash: string) => {
  const c = r.peek(hash);
  return c?.status === 'found' ? c.origin.name : c?.status;
};

describe('answers found upstream while the Pi did not answer in time', () => {
  it('are forgotten when the Pi answers again (its late answer): the NAR route asks the Pi first again; what the Pi lacks stays upstream', async () => {
    // The Pi is slow (600 ms, past the 100 ms hedge) for the first two paths and quickly says it lacks the third.
    let away = true;
    const pi = origin('pi', 'lan', (h) => ({ has: h !== HASHES[2], ms: h === HASHES[2] || !away ? 1 : 600 }));
    const up = origin('up', 'upstream', () => ({ has: true, ms: 5 }));
    const r = new NarInfoResolver(new OriginSet([pi, up]), { maxEntries: 100, hitTtlSeconds: 3600, missTtlSeconds: 60, hedgeMs: { lan: 100, peer: 100, upstream: 0 } }, new Stats(), pino({ level: 'silent' }));
    const asked = HASHES.map((h) => r.resolve(h));
    // The Pi's quick "absent" is an answer: the other two wait a few hedge delays more (it is busy, not gone), then upstream.
    await vi.advanceTimersByTimeAsync(410);
    await Promise.all(asked);
    expect(HASHES.map((h) => from(r, h))).toEqual(['up', 'up', 'up']);

    // The Pi's answers come, late: it answers again.
    await vi.advanceTimersByTimeAsync(200);
    expect(HASHES.map((h) => from(r, h))).toEqual([undefined, undefined, 'up']);
    // Asked again, the Pi (back, answering in time) is asked first and wins.
    away = false;
    const again = r.resolve(HASHES[0]!);
    await vi.advanceTimersByTimeAsync(1);
    expect(from(r, HASHES[0]!)).toBe('pi');
    await again;
    await pi.close();
    await up.close();
  });
});
