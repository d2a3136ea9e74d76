import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { NarFacts } from '../nar/candidates.js';
import type { NarInfo } from '../protocol/narinfo.js';
import { serialiseNarInfo } from '../protocol/narinfo.js';
import { formatNarUrl } from '../protocol/narurl.js';
import type { NarInfoLookup, Origin, OriginKind } from '../origins/origin.js';
import type { OriginSet } from '../origins/origin-set.js';
import { outcomeOf, type Stats } from '../stats/recorder.js';
import { type LookupOutcome } from '../stats/model.js';

export type Resolution =
  /** Only what serving needs is kept: the text Nix gets, and where the origin keeps the NAR. */
  | { status: 'found'; origin: Origin; text: string; facts: NarFacts }
  /** Every origin answered "absent". */
  | { status: 'missing' }
  /** No origin had it and at least one could not be asked. */
  | { status: 'unavailable'; unknown: string[] };

const MAX_CACHE_BYTES = 8 * 1024 * 1024;

export interface ResolverOptions {
  maxEntries: number;
  hitTtlSeconds: number;
  missTtlSeconds: number;
  /** Per kind of origin: after this long without an answer, the next origins are asked alongside (0: never). */
  hedgeMs: Record<OriginKind, number>;
}

type Found = { origin: Origin; info: NarInfo };

/** What the origins said on the way, for the log and the fallback record. */
interface Trail {
  unknown: string[];
  lanSaid: Array<{ origin: string; outcome: LookupOutcome }>;
}

/**
 * Finds the narinfo for a store hash: LAN caches first, then upstreams; the
 * first validly signed answer wins. Results are cached in memory; every
 * cached answer is dropped the moment any origin comes back, so a path on
 * the Pi is found as soon as the Pi is home again.
 */
export class NarInfoResolver {
  private readonly cache: LRUCache<string, Resolution>;
  private readonly inflight = new Map<string, Promise<Resolution>>();
  /**
   * Origins whose last lookup outlived the hedge delay: until one of their
   * answers arrives, lookups ask the next origins alongside at once instead
   * of waiting the delay again (their circuit opens at the first-byte timeout).
   */
  private readonly slow = new Set<Origin>();
  /** Bumped whenever cached answers are dropped, so a lookup that started before doesn't store a stale one. */
  private generation = 0;

  constructor(
    private readonly origins: OriginSet,
    private readonly options: ResolverOptions,
    private readonly stats: Stats,
    private readonly log: Logger,
  ) {
    // Bounded by count and by bytes: a narinfo is ~0.5-2 KB of text, big closures list many references.
    this.cache = new LRUCache({ max: options.maxEntries, maxSize: MAX_CACHE_BYTES, sizeCalculation: (r) => (r.status === 'found' ? r.text.length * 2 + r.facts.url.length * 2 + 300 : 100) });
    const forget = () => {
      this.slow.clear();
      this.generation++;
      this.cache.clear();
      this.inflight.clear();
    };
    origins.on('up', forget);
    origins.on('added', forget);
    origins.on('removed', forget);
  }

  async resolve(storeHash: string): Promise<Resolution> {
    const cached = this.cache.get(storeHash);
    if (cached) {
      this.stats.narinfoCache(cached.status === 'found');
      this.answered(cached);
      return cached;
    }
    let pending = this.inflight.get(storeHash);
    if (!pending) {
      const p = this.lookup(storeHash).finally(() => {
        if (this.inflight.get(storeHash) === p) this.inflight.delete(storeHash);
      });
      this.inflight.set(storeHash, (pending = p));
    }
    const result = await pending;
    this.answered(result);
    return result;
  }

  /** One client request, one count (concurrent requests share a lookup but each gets an answer). */
  private answered(r: Resolution): void {
    this.stats.narinfoAnswered(r.status, r.status === 'found' ? r.origin.name : undefined);
  }

  /** The cached answer, if any, without counting it (the NAR path asks which origin it came from). */
  peek(storeHash: string): Resolution | undefined {
    return this.cache.peek(storeHash);
  }

  private async lookup(storeHash: string): Promise<Resolution> {
    const generation = this.generation;
    const trail: Trail = { unknown: [], lanSaid: [] };
    const hit = await this.firstPresent(this.origins.ordered(), 0, storeHash, trail);
    if (hit) {
      const { origin, info } = hit;
      if (origin.kind === 'upstream') this.stats.narinfoFallback(storeHash, origin.name, [...trail.lanSaid]);
      const { url, compression, narHash, narSize, fileHash, fileSize } = info;
      const found: Resolution = { status: 'found', origin, text: serialiseNarInfo(servedNarInfo(info)), facts: { url, compression, narHash, narSize, fileHash, fileSize } };
      if (generation === this.generation) this.cache.set(storeHash, found, { ttl: this.options.hitTtlSeconds * 1000 });
      return found;
    }
    const { unknown } = trail;
    const miss: Resolution = unknown.length ? { status: 'unavailable', unknown } : { status: 'missing' };
    if (unknown.length) this.log.debug({ storeHash, unknown }, 'narinfo not found; some origins could not be asked');
    if (this.options.missTtlSeconds > 0 && generation === this.generation) this.cache.set(storeHash, miss, { ttl: this.options.missTtlSeconds * 1000 });
    return miss;
  }

  /**
   * Asks `origins[from..]` in order for the first validly signed narinfo. An
   * origin whose circuit is open is skipped without waiting. One that has not
   * answered within its kind's hedge delay is not waited on alone: the rest of
   * the chain is asked alongside and the first present answer wins, so a Pi
   * that hangs costs the hedge delay, once, not its whole first-byte timeout.
   */
  private async firstPresent(origins: readonly Origin[], from: number, storeHash: string, trail: Trail): Promise<Found | undefined> {
    for (let i = from; i < origins.length; i++) {
      const origin = origins[i]!;
      if (origin.breaker.isOpen) {
        trail.unknown.push(`${origin.name}: circuit open`);
        this.stats.narinfoLookup(origin.name, 'skipped', 0);
        if (origin.kind === 'lan') trail.lanSaid.push({ origin: origin.name, outcome: 'skipped' });
        continue;
      }
      const asking = this.ask(origin, storeHash, trail);
      // A filling LAN cache asks upstream itself: racing it would fetch the path twice (docs/fill.md).
      const hedgeMs = origin.fills ? 0 : this.options.hedgeMs[origin.kind];
      const hedged = hedgeMs > 0 && i + 1 < origins.length;
      const early = !hedged ? { value: await asking } : this.slow.has(origin) ? undefined : await settledWithin(asking, hedgeMs);
      if (!early) {
        this.slow.add(origin);
        return firstDefined(asking, this.firstPresent(origins, i + 1, storeHash, trail));
      }
      if (early.value) return early.value;
    }
    return undefined;
  }

  /** One origin's answer, counted; undefined unless it is present. */
  private async ask(origin: Origin, storeHash: string, trail: Trail): Promise<Found | undefined> {
    const result = await this.askOrigin(origin, storeHash);
    if (result.status === 'present') return { origin, info: result.info };
    if (origin.kind === 'lan') trail.lanSaid.push({ origin: origin.name, outcome: outcomeOf(result) });
    if (result.status === 'unknown') trail.unknown.push(`${origin.name}: ${result.reason}`);
    return undefined;
  }

  /**
   * One origin's answer for one store hash, uncached, counted in the stats
   * like every other narinfo request to an origin (NAR failover asks this way).
   */
  async askOrigin(origin: Origin, storeHash: string): Promise<NarInfoLookup> {
    const started = performance.now();
    const result = await origin.lookupNarInfo(storeHash);
    if (result.status !== 'unknown') this.slow.delete(origin);
    this.stats.narinfoLookup(origin.name, outcomeOf(result), performance.now() - started);
    return result;
  }
}

/**
 * The narinfo Nix gets: the NAR uncompressed (the proxy decompresses whatever
 * the origin holds), named by its content, so any origin with the same
 * NarHash can serve it. Only unsigned fields change: signatures cover
 * `1;path;NarHash;NarSize;references`.
 */
export function servedNarInfo(info: NarInfo): NarInfo {
  return { ...info, url: formatNarUrl(info.path.hash, info.narHash), compression: 'none', fileHash: info.narHash, fileSize: info.narSize };
}

/** `{ value }` if `p` settles within `ms`, undefined otherwise. */
async function settledWithin<T>(p: Promise<T>, ms: number): Promise<{ value: T } | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  try {
    return await Promise.race([p.then((value) => ({ value })), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The first of two lookups to find something; undefined once both found nothing. */
function firstDefined<T>(a: Promise<T | undefined>, b: Promise<T | undefined>): Promise<T | undefined> {
  return new Promise((resolve, reject) => {
    let pending = 2;
    const settle = (value: T | undefined) => {
      if (value !== undefined) resolve(value);
      else if (--pending === 0) resolve(undefined);
    };
    a.then(settle, reject);
    b.then(settle, reject);
  });
}
