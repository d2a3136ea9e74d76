import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { NarInfo } from '../protocol/narinfo.js';
import { serialiseNarInfo } from '../protocol/narinfo.js';
import { formatNarUrl } from '../protocol/narurl.js';
import type { NarInfoLookup, Origin } from '../origins/origin.js';
import type { OriginSet } from '../origins/origin-set.js';
import type { Stats } from '../stats.js';

export type Resolution =
  | { status: 'found'; origin: Origin; info: NarInfo; text: string }
  /** Every origin answered "absent". */
  | { status: 'missing' }
  /** No origin had it and at least one could not be asked. */
  | { status: 'unavailable'; unknown: string[] };

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
    this.cache = new LRUCache({ max: options.maxEntries, ttlAutopurge: false });
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
      return cached;
    }
    let pending = this.inflight.get(storeHash);
    if (!pending) {
      const p = this.lookup(storeHash).finally(() => {
        if (this.inflight.get(storeHash) === p) this.inflight.delete(storeHash);
      });
      this.inflight.set(storeHash, (pending = p));
    }
    return pending;
  }

  /** A cached answer found on a given origin, if any (used to recognise identical NAR files). */
  peek(storeHash: string): Resolution | undefined {
    return this.cache.peek(storeHash);
  }

  private async lookup(storeHash: string): Promise<Resolution> {
    const generation = this.generation;
    const unknown: string[] = [];
    for (const origin of this.origins.ordered()) {
      if (origin.breaker.isOpen) {
        unknown.push(`${origin.name}: circuit open`);
        this.stats.narinfoLookup(origin.name, 'skipped', 0);
        continue;
      }
      const started = performance.now();
      const result: NarInfoLookup = await origin.lookupNarInfo(storeHash);
      const ms = performance.now() - started;
      this.stats.narinfoLookup(origin.name, outcomeOf(result), ms);
      if (result.status === 'present') {
        const info = { ...result.info, url: formatNarUrl({ storeHash, narHash: result.info.narHash, compression: result.info.compression, originId: origin.id, originUrl: result.info.url }) };
        const found: Resolution = { status: 'found', origin, info: result.info, text: serialiseNarInfo(info) };
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

function outcomeOf(result: NarInfoLookup): 'hit' | 'miss' | 'untrusted' | 'error' | 'timeout' {
  if (result.status === 'present') return 'hit';
  if (result.status === 'absent') return result.reason === 'not-found' ? 'miss' : 'untrusted';
  return /timeout/i.test(result.reason) ? 'timeout' : 'error';
}
