import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Breaker } from '../../src/origins/breaker.js';
import type { NarInfoLookup, Origin } from '../../src/origins/origin.js';
import { OriginSet } from '../../src/origins/origin-set.js';
import { parseNarInfo } from '../../src/protocol/narinfo.js';
import { NarInfoResolver } from '../../src/server/narinfo-resolver.js';
import { Stats } from '../../src/stats/recorder.js';

const HASH = '3kklkssmzr75mhpv3s4qw1m26y4w6zrn';
const INFO = parseNarInfo(`StorePath: /nix/store/${HASH}-x
URL: nar/03lzs95hsqhn8i2krdmlvw8r1q6mfcjrzg2cp18saf5a0f9f3jdn.nar.xz
Compression: xz
NarHash: sha256:1z36l1l7cvc7d3x3y814zv4pdgx17j6i2i8ml4japbpzwc5yh155
NarSize: 120
References: 
`);

type Answer = { at: number; result: NarInfoLookup };
const present: NarInfoLookup = { status: 'present', info: INFO, trustedBy: 'k' };
const absent: NarInfoLookup = { status: 'absent', reason: 'not-found' };

/**
 * An origin that answers `answer.result` after `answer.at` ms; a LAN one may
 * fill (Origin.fills). A hanging one fails with a timeout at `at`, as
 * HttpOrigin does at its first-byte timeout, and opens its circuit.
 */
function origin(name: string, o: { kind: 'lan' | 'upstream'; fills?: boolean; answer: Answer }): Origin & { asked: number } {
  const breaker = new Breaker({ maxFails: 1, probeIntervalMs: 60_000 }, async () => false);
  return {
    id: name,
    name,
    kind: o.kind,
    fills: o.fills,
    baseUrl: `http://${name}/`,
    priority: 10,
    breaker,
    asked: 0,
    async lookupNarInfo() {
      this.asked++;
      await new Promise((r) => setTimeout(r, o.answer.at));
      if (o.answer.result.status === 'unknown') breaker.failure(o.answer.result.reason);
      return o.answer.result;
    },
    async fetchFile() {
      return { status: 'unknown', cause: 'unreachable', reason: 'not used' };
    },
    reportFailure() {},
    async close() {
      breaker.close();
    },
  };
}

const resolver = (origins: Origin[]) =>
  new NarInfoResolver(new OriginSet(origins), { maxEntries: 100, hitTtlSeconds: 60, missTtlSeconds: 0, hedgeMs: { lan: 200, upstream: 0 } }, new Stats(), pino({ level: 'silent' }));

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

describe('a LAN cache that fills from upstream (fill=1, --lan-fill): waited for, not raced', () => {
  it('a filling Pi that takes 1.5 s (it is asking upstream itself) is waited for: upstream is never asked, the Pi answers', async () => {
    const pi = origin('pi', { kind: 'lan', fills: true, answer: { at: 1500, result: present } });
    const up = origin('up', { kind: 'upstream', answer: { at: 5, result: present } });
    const r = resolver([pi, up]).resolve(HASH);
    await vi.advanceTimersByTimeAsync(1500);
    const found = await r;
    expect(found.status === 'found' && found.origin.name).toBe('pi');
    expect(up.asked).toBe(0);
  });

  it('the same Pi without the fill flag is raced after the 200 ms hedge delay: upstream is asked too (the double download)', async () => {
    const pi = origin('pi', { kind: 'lan', answer: { at: 1500, result: present } });
    const up = origin('up', { kind: 'upstream', answer: { at: 5, result: present } });
    const r = resolver([pi, up]).resolve(HASH);
    await vi.advanceTimersByTimeAsync(1500);
    const found = await r;
    expect(found.status === 'found' && found.origin.name).toBe('up');
    expect(up.asked).toBe(1);
  });

  it("Pi's internet down: fill answers a quick 404, and the laptop asks upstream at once", async () => {
    const pi = origin('pi', { kind: 'lan', fills: true, answer: { at: 10, result: absent } });
    const up = origin('up', { kind: 'upstream', answer: { at: 5, result: present } });
    const r = resolver([pi, up]).resolve(HASH);
    await vi.advanceTimersByTimeAsync(15);
    const found = await r;
    expect(found.status === 'found' && found.origin.name).toBe('up');
  });

  it('a filling Pi that hangs costs its first-byte timeout once: its circuit opens and the next lookups go straight to upstream', async () => {
    const pi = origin('pi', { kind: 'lan', fills: true, answer: { at: 5000, result: { status: 'unknown', cause: 'timeout', reason: 'no response head within 5000 ms' } } });
    const up = origin('up', { kind: 'upstream', answer: { at: 5, result: present } });
    const res = resolver([pi, up]);
    const first = res.resolve(HASH);
    await vi.advanceTimersByTimeAsync(5005);
    const found = await first;
    expect(found.status === 'found' && found.origin.name).toBe('up');
    expect(pi.breaker.isOpen).toBe(true);

    const start = Date.now();
    const second = res.resolve('1kklkssmzr75mhpv3s4qw1m26y4w6zrn');
    await vi.advanceTimersByTimeAsync(5);
    await second;
    expect(Date.now() - start).toBe(5);
    expect(pi.asked).toBe(1);
  });
});
