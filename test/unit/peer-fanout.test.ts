import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Breaker } from '../../src/origins/breaker.js';
import type { NarInfoLookup, Origin, OriginKind } from '../../src/origins/origin.js';
import { OriginSet, type PeerOrder } from '../../src/origins/origin-set.js';
import { parseNarInfo } from '../../src/protocol/narinfo.js';
import { NarInfoResolver } from '../../src/server/narinfo-resolver.js';
import { Stats } from '../../src/stats/recorder.js';
import { randomStoreHash } from '../helpers/nar-fixtures.js';
import { fetchesNothing } from '../helpers/lookup-origin.js';

/**
 * Peers (other machines' shares) as the resolver asks them: after the LAN
 * caches, before the upstreams (or after), a few at once, hedged, with a
 * short memory of who lacked what. Time is faked, as in resolver.test.ts.
 */
interface Scripted extends Origin {
  breaker: Breaker;
  /** Store hashes asked, in order. */
  asked: string[];
}

/** An origin that has `has` (answered after `delayMs`); `hang` never answers in time (unknown after 1.5 s). */
function origin(name: string, kind: OriginKind, has: Set<string> | 'all', delayMs = 5, hang = false): Scripted {
  const breaker = new Breaker({ maxFails: 1, probeIntervalMs: 60_000 }, async () => false);
  return {
    id: name,
    name,
    kind,
    baseUrl: `http://${name}/`,
    priority: 10,
    breaker,
    asked: [],
    async lookupNarInfo(storeHash: string): Promise<NarInfoLookup> {
      this.asked.push(storeHash);
      await new Promise((r) => setTimeout(r, hang ? 1500 : delayMs));
      if (hang) return { status: 'unknown', cause: 'timeout', reason: 'no answer' };
      if (has !== 'all' && !has.has(storeHash)) return { status: 'absent', reason: 'not-found' };
      const info = parseNarInfo(`StorePath: /nix/store/${storeHash}-x\nURL: nar/x.nar\nCompression: none\nNarHash: sha256:1z36l1l7cvc7d3x3y814zv4pdgx17j6i2i8ml4japbpzwc5yh155\nNarSize: 120\nReferences: \n`);
      return { status: 'present', info, trustedBy: 'k' };
    },
    ...fetchesNothing,
    async close() {
      breaker.close();
    },
  };
}

function resolver(origins: Origin[], o: { order?: PeerOrder; fanout?: number; missTtlSeconds?: number; resolverMissTtl?: number } = {}) {
  return new NarInfoResolver(
    new OriginSet(origins, o.order ?? 'before-upstream'),
    { maxEntries: 1000, hitTtlSeconds: 60, missTtlSeconds: o.resolverMissTtl ?? 0, hedgeMs: { lan: 50, peer: 50, upstream: 0 }, peers: { fanout: o.fanout ?? 3, missTtlSeconds: o.missTtlSeconds ?? 10 } },
    new Stats(),
    pino({ level: 'silent' }),
  );
}

/** Resolves `hash`, letting fake time run; `ms`: the fake time it took. */
async function resolveAt(r: NarInfoResolver, hash: string): Promise<{ from: string | undefined; ms: number }> {
  const start = Date.now();
  let ms = -1;
  const p = r.resolve(hash).finally(() => (ms = Date.now() - start));
  await vi.advanceTimersByTimeAsync(5000);
  const res = await p;
  return { from: res.status === 'found' ? res.origin.name : undefined, ms };
}

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

describe('asking peers for narinfos', () => {
  it('after the LAN cache and before upstream: a peer that has the path wins; upstream is not asked', async () => {
    const hash = randomStoreHash();
    const pi = origin('pi', 'lan', new Set());
    const peer = origin('peer', 'peer', new Set([hash]));
    const up = origin('up', 'upstream', 'all', 1);
    const r = resolver([up, peer, pi]);
    expect((await resolveAt(r, hash)).from).toBe('peer');
    expect(pi.asked).toEqual([hash]);
    expect(up.asked).toEqual([]);
  });

  it('peers after upstream (peer-order after-upstream): asked only for what upstream lacks or cannot answer', async () => {
    const [a, b] = [randomStoreHash(), randomStoreHash()];
    const peer = origin('peer', 'peer', 'all');
    const up = origin('up', 'upstream', new Set([a]));
    const r = resolver([peer, up], { order: 'after-upstream' });
    expect((await resolveAt(r, a)).from).toBe('up');
    expect(peer.asked).toEqual([]);
    expect((await resolveAt(r, b)).from).toBe('peer');
  });

  it('asks a few peers at once, not all, taking turns; then upstream', async () => {
    const peers = Array.from({ length: 10 }, (_, i) => origin(`peer${i}`, 'peer', new Set()));
    const up = origin('up', 'upstream', 'all');
    const r = resolver([...peers, up], { fanout: 3 });
    const first = randomStoreHash();
    expect((await resolveAt(r, first)).from).toBe('up');
    const askedFirst = peers.filter((p) => p.asked.includes(first));
    expect(askedFirst).toHaveLength(3);
    const second = randomStoreHash();
    await resolveAt(r, second);
    const askedSecond = peers.filter((p) => p.asked.includes(second));
    expect(askedSecond).toHaveLength(3);
    expect(askedSecond.some((p) => !askedFirst.includes(p))).toBe(true); // the others get their turn
  });

  it('a peer that served hits is asked first: with a fan-out of one, once it was found it is the one asked', async () => {
    const paths = Array.from({ length: 6 }, () => randomStoreHash());
    const peers = Array.from({ length: 5 }, (_, i) => origin(`peer${i}`, 'peer', i === 3 ? new Set(paths) : new Set()));
    const up = origin('up', 'upstream', new Set());
    const r = resolver([...peers, up], { fanout: 1 });
    let found = 0;
    for (const p of paths.slice(0, 5)) if ((await resolveAt(r, p)).from === 'peer3') found++;
    expect(found).toBeGreaterThanOrEqual(1); // reached by turns
    const before = peers.map((p) => p.asked.length);
    expect((await resolveAt(r, paths[5]!)).from).toBe('peer3');
    expect(peers.map((p, i) => p.asked.length - before[i]!)).toEqual([0, 0, 0, 1, 0]);
  });

  it('remembers for a short while which peer lacked a path, and asks again after', async () => {
    const hash = randomStoreHash();
    const peer = origin('peer', 'peer', new Set());
    const up = origin('up', 'upstream', new Set());
    const r = resolver([peer, up], { missTtlSeconds: 10, resolverMissTtl: 0 });
    await resolveAt(r, hash);
    await resolveAt(r, hash);
    expect(peer.asked).toEqual([hash]);
    expect(up.asked).toEqual([hash, hash]);
    await vi.advanceTimersByTimeAsync(10_000);
    await resolveAt(r, hash);
    expect(peer.asked).toEqual([hash, hash]);
  });

  it('a peer that hangs costs the hedge delay, not its timeout: upstream answers; a peer that is down is not asked', async () => {
    const hash = randomStoreHash();
    const hung = origin('hung', 'peer', 'all', 0, true);
    const up = origin('up', 'upstream', 'all', 5);
    const r = resolver([hung, up]);
    const res = await resolveAt(r, hash);
    expect(res).toEqual({ from: 'up', ms: 55 });
    const down = origin('down', 'peer', 'all');
    down.breaker.trip('gone');
    const r2 = resolver([down, origin('up2', 'upstream', 'all')]);
    expect((await resolveAt(r2, hash)).from).toBe('up2');
    expect(down.asked).toEqual([]);
  });

  it('no peer and no upstream has it: a miss, answered as soon as they said so', async () => {
    const hash = randomStoreHash();
    const r = resolver([origin('peer', 'peer', new Set(), 3), origin('up', 'upstream', new Set(), 7)]);
    const start = Date.now();
    const p = r.resolve(hash);
    await vi.advanceTimersByTimeAsync(10);
    expect((await p).status).toBe('missing');
    expect(Date.now() - start).toBe(10);
  });
});
