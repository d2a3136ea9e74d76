import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { NarInfo } from '../protocol/narinfo.js';
import { serialiseNarInfo } from '../protocol/narinfo.js';
import { formatNarUrl } from '../protocol/narurl.js';
import type { NarInfoLookup, Origin } from '../origins/origin.js';
import type { OriginSet } from '../origins/origin-set.js';
import { outcomeOf, type LookupOutcome, type Stats } from '../stats.js';

export type Resolution =
  /** Only what serving needs is kept: the text Nix gets, and the FileHash that recognises identical NAR files. */
  | { status: 'found'; origin: Origin; text: string; fileHash: NarInfo['fileHash'] }
  /** Every origin answered "absent". */
  | { status: 'missing' }
  /** No origin had it and at least one could not be asked. */
  | { status: 'unavailable'; unknown: string[] };

const MAX_CACHE_BYTES = 64 * 1024 * 1024;

export interface ResolverOptions {
  maxEntries: number;
  hitTtlSeconds: number;
  missTtlSeconds: number;
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
  /** Bumped whenever cached answers are dropped, so a lookup that started before doesn't store a stale one. */
  private generation = 0;

  constructor(
    private readonly origins: OriginSet,
    private readonly options: ResolverOptions,
    private readonly stats: Stats,
    private readonly log: Logger,
  ) {
    // Bounded by count and by bytes: a narinfo is ~0.5-2 KB of text, big closures list many references.
    this.cache = new LRUCache({ max: options.maxEntries, maxSize: MAX_CACHE_BYTES, sizeCalculation: (r) => (r.status === 'found' ? r.text.length * 2 + 200 : 100) });
    const forget = () => {
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

  /** A cached answer found on a given origin, if any (used to recognise identical NAR files). */
  peek(storeHash: string): Resolution | undefined {
    return this.cache.peek(storeHash);
  }

  private async lookup(storeHash: string): Promise<Resolution> {
    const generation = this.generation;
    const unknown: string[] = [];
    const lanSaid: Array<{ origin: string; outcome: LookupOutcome }> = [];
    for (const origin of this.origins.ordered()) {
      if (origin.breaker.isOpen) {
        unknown.push(`${origin.name}: circuit open`);
        this.stats.narinfoLookup(origin.name, 'skipped', 0);
        if (origin.kind === 'lan') lanSaid.push({ origin: origin.name, outcome: 'skipped' });
        continue;
      }
      const started = performance.now();
      const result: NarInfoLookup = await origin.lookupNarInfo(storeHash);
      const ms = performance.now() - started;
      this.stats.narinfoLookup(origin.name, outcomeOf(result), ms);
      if (origin.kind === 'lan' && result.status !== 'present') lanSaid.push({ origin: origin.name, outcome: outcomeOf(result) });
      if (result.status === 'present') {
        if (origin.kind === 'upstream') this.stats.narinfoFallback(storeHash, origin.name, lanSaid);
        const info = { ...result.info, url: formatNarUrl({ storeHash, narHash: result.info.narHash, compression: result.info.compression, originId: origin.id, originUrl: result.info.url }) };
        const found: Resolution = { status: 'found', origin, text: serialiseNarInfo(info), fileHash: result.info.fileHash };
        if (generation === this.generation) this.cache.set(storeHash, found, { ttl: this.options.hitTtlSeconds * 1000 });
        return found;
      }
      if (result.status === 'unknown') unknown.push(`${origin.name}: ${result.reason}`);
    }
    const miss: Resolution = unknown.length ? { status: 'unavailable', unknown } : { status: 'missing' };
    if (unknown.length) this.log.debug({ storeHash, unknown }, 'narinfo not found; some origins could not be asked');
    if (this.options.missTtlSeconds > 0 && generation === this.generation) this.cache.set(storeHash, miss, { ttl: this.options.missTtlSeconds * 1000 });
    return miss;
  }
}
