import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { NarFacts } from '../nar/candidates.js';
import type { NarInfo } from '../protocol/narinfo.js';
import { serialiseNarInfo } from '../protocol/narinfo.js';
import { keptFacts } from './narinfo-facts.js';
import type { NarInfoLookup, Origin, OriginKind } from '../origins/origin.js';
import type { OriginSet } from '../origins/origin-set.js';
import { outcomeOf, type Stats } from '../stats/recorder.js';
import { type LookupOutcome } from '../stats/model.js';
import { NarInfoPrefetcher, type PrefetchOptions } from './narinfo-prefetch.js';
import { PeerFanout } from './peer-fanout.js';
import { servedNarInfo } from './served-narinfo.js';
import { FoundElsewhere } from './found-elsewhere.js';
import { LookupSlowness } from './lookup-slowness.js';
import { settledUnlessQuiet } from '../origins/awake-wait.js';
import { firstDefined } from './settle.js';

export type Resolution =
  /**
   * Only what serving needs is kept: the text Nix gets, where the origin
   * keeps the NAR, and the store hashes of the references (what Nix will
   * ask next).
   */
  | { status: 'found'; origin: Origin; text: string; facts: NarFacts; refs: readonly string[] }
  /** Every origin answered "absent". */
  | { status: 'missing' }
  /** No origin had it and at least one could not be asked. */
  | { status: 'unavailable'; unknown: string[] };

const MAX_CACHE_BYTES = 8 * 1024 * 1024;

/**
 * Hedge delays a lookup waits at most on an origin that is answering other
 * requests meanwhile (a Pi busy with Nix's 25 lookups at once): four is the
 * LAN first-byte timeout (800 ms).
 */
const BUSY_HEDGE_WINDOWS = 4;

export interface ResolverOptions {
  maxEntries: number;
  hitTtlSeconds: number;
  missTtlSeconds: number;
  /** Per kind of origin: after this long without an answer, the next origins are asked alongside (0: never). */
  hedgeMs: Record<OriginKind, number>;
  /** A LAN cache quiet this long is checked before its cached answers are served (default QUIET_MS, 1000). */
  quietMs?: number;
  /** Asking for the references' narinfos before Nix does (docs/architecture.md); off when absent. */
  prefetch?: Omit<PrefetchOptions, 'maxQueued'> & { maxQueued?: number };
  /** Peers asked at once for a narinfo, and how long one that had no answer is not asked again for that path (default 4, 10 s). */ peers?: { fanout: number; missTtlSeconds: number };
}

type Found = { origin: Origin; info: NarInfo };

/** What the origins said on the way, for the log and the fallback record. */
interface Trail {
  unknown: string[];
  lanSaid: Array<{ origin: string; outcome: LookupOutcome }>;
  /** Origins that answered "absent" (not found, or not validly signed). */
  absent: Set<Origin>;
}

/** A prefetched answer no client has asked for yet, and the fallback to record when one does. */
type Unclaimed = { fallback?: { to: string; lan: Trail['lanSaid'] } };

/**
 * Finds the narinfo for a store hash: LAN caches first, then upstreams; the
 * first validly signed answer wins. Results are cached in memory; every
 * cached answer is dropped the moment any origin comes back, so a path on
 * the Pi is found as soon as the Pi is home again. When Nix asks for a
 * narinfo, the narinfos of its references are looked up ahead (prefetched)
 * through the same lookup, so they land in the same cache.
 */
export class NarInfoResolver {
  private readonly cache: LRUCache<string, Resolution>;
  private readonly inflight = new Map<string, Promise<Resolution>>();
  /** Origins slow to answer lookups, and the check of a quiet LAN cache (lookup-slowness.ts). */
  private readonly slow: LookupSlowness;
  /** Cached answers found at another origin while a LAN cache had not answered (found-elsewhere.ts). */
  private readonly elsewhere = new FoundElsewhere();
  /** Prefetched answers in the cache that no client has asked for yet. */
  private readonly unclaimed = new Map<string, Unclaimed>();
  /** Prefetch lookups in flight that no client has joined yet. */
  private readonly prefetching = new Set<string>();
  readonly prefetcher: NarInfoPrefetcher;
  private readonly peers: PeerFanout;
  /** Bumped whenever cached answers are dropped, so a lookup that started before doesn't store a stale one. */
  private generation = 0;

  constructor(
    private readonly origins: OriginSet,
    private readonly options: ResolverOptions,
    private readonly stats: Stats,
    private readonly log: Logger,
  ) {
    this.slow = new LookupSlowness(log, options.quietMs, (origin) => this.answersAgain(origin));
    // Bounded by count and by bytes: a narinfo is ~0.5-2 KB of text, big closures list many references.
    this.cache = new LRUCache({
      max: options.maxEntries,
      maxSize: MAX_CACHE_BYTES,
      sizeCalculation: (r) => (r.status === 'found' ? r.text.length * 2 + r.facts.url.length * 2 + r.refs.length * 100 + 300 : 100),
      dispose: (_r, storeHash) => {
        this.unclaimed.delete(storeHash);
        this.elsewhere.forget(storeHash);
      },
    });
    this.peers = new PeerFanout({ width: options.peers?.fanout ?? 4, missTtlMs: (options.peers?.missTtlSeconds ?? 10) * 1000, hedgeMs: options.hedgeMs.peer });
    const p = options.prefetch;
    this.prefetcher = new NarInfoPrefetcher(
      { concurrency: p?.concurrency ?? 0, depth: p?.depth ?? 0, maxQueued: p?.maxQueued ?? Math.max(256, options.maxEntries >> 2) },
      { warm: (h) => this.warm(h) },
      {
        dropped: () => stats.narinfoPrefetch('dropped'),
        failed: (storeHash, err) => log.error({ err, storeHash, event: 'bug' }, 'narinfo prefetch failed'),
      },
    );
    const forget = (this.forget = () => {
      this.slow.clear();
      this.generation++;
      this.cache.clear();
      this.elsewhere.clear();
      this.inflight.clear();
      this.unclaimed.clear();
      this.prefetching.clear();
      this.prefetcher.clear();
    });
    origins.on('up', forget);
    origins.on('added', forget);
    origins.on('removed', forget);
  }

  /** Drops every cached answer (an origin came back, or the set changed). */
  private readonly forget: () => void;

  /**
   * A LAN cache that was left for being too slow with NARs proved itself
   * again (nar/slow-marks.ts): like a circuit that closes, the answers found
   * elsewhere while it was away are forgotten, so its paths come from it again.
   */
  originBack(origin: Origin): void {
    this.log.info({ event: 'origin-back', origin: origin.name }, `origin ${origin.name} serves NARs in time again`);
    this.forget();
  }

  /**
   * A LAN cache that was slow to answer lookups answered one (lookup-slowness.ts):
   * the answers found elsewhere while it had not answered are forgotten, so
   * their NARs are asked of it first again.
   */
  private answersAgain(origin: Origin): void {
    const hashes = this.elsewhere.takeFor(origin);
    for (const h of hashes) this.cache.delete(h);
    if (hashes.length) this.log.info({ event: 'origin-answers', origin: origin.name, forgotten: hashes.length }, `origin ${origin.name} answers lookups again; forgot ${hashes.length} answers found elsewhere meanwhile`);
  }

  /** One client request for a narinfo: answered from memory or the origins, and its references prefetched. */
  async resolve(storeHash: string): Promise<Resolution> {
    let cached = this.cache.get(storeHash);
    const suspect = cached?.status === 'found' ? this.slow.suspect(cached.origin, this.origins.ordered().at(-1) === cached.origin, this.options.hedgeMs[cached.origin.kind]) : false;
    if (suspect === true || (suspect !== false && (await suspect))) {
      // Its origin stopped answering: ask again (the next origins at once) rather than hand out its NAR URL.
      if (this.cache.get(storeHash) === cached) this.cache.delete(storeHash);
      cached = undefined;
    }
    if (cached) {
      this.stats.narinfoCache(cached.status === 'found');
      this.claim(storeHash);
      this.answered(cached);
      return cached;
    }
    let pending = this.inflight.get(storeHash);
    if (!pending) pending = this.start(storeHash, false);
    else if (this.prefetching.delete(storeHash)) this.stats.narinfoPrefetch('used'); // joined a prefetch on its way
    const result = await pending;
    this.answered(result);
    return result;
  }

  /** One client request, one count (concurrent requests share a lookup but each gets an answer); then look ahead. */
  private answered(r: Resolution): void {
    this.stats.narinfoAnswered(r.status, r.status === 'found' ? r.origin.name : undefined);
    if (r.status === 'found') this.prefetcher.ahead(r.refs);
  }

  /** A client asked for a path that was prefetched: count it as used, and record its fallback now. */
  private claim(storeHash: string): void {
    const u = this.unclaimed.get(storeHash);
    if (!u) return;
    this.unclaimed.delete(storeHash);
    this.stats.narinfoPrefetch('used');
    if (u.fallback) this.stats.narinfoFallback(storeHash, u.fallback.to, u.fallback.lan);
  }

  private start(storeHash: string, prefetch: boolean): Promise<Resolution> {
    const p = this.lookup(storeHash, prefetch).finally(() => {
      if (this.inflight.get(storeHash) === p) this.inflight.delete(storeHash);
    });
    this.inflight.set(storeHash, p);
    return p;
  }

  /** The prefetcher's way in: a lookup nobody asked for yet, unless one is cached or running. */
  private warm(storeHash: string): Promise<readonly string[] | undefined> | undefined {
    if (this.cache.has(storeHash) || this.inflight.has(storeHash)) return undefined;
    this.stats.narinfoPrefetch('lookups');
    this.prefetching.add(storeHash);
    return this.start(storeHash, true).then((r) => (r.status === 'found' ? r.refs : undefined));
  }

  /** The cached answer, if any, without counting it (the NAR path asks which origin it came from). */
  peek(storeHash: string): Resolution | undefined {
    return this.cache.peek(storeHash);
  }

  /** Asks the origins; a prefetch records its fallback only once a client asks, and caches no "could not ask". */
  private async lookup(storeHash: string, prefetch: boolean): Promise<Resolution> {
    const generation = this.generation;
    const trail: Trail = { unknown: [], lanSaid: [], absent: new Set() };
    const hit = await this.firstPresent(this.origins.ordered(), 0, storeHash, trail);
    const current = generation === this.generation;
    // Still unclaimed: no client joined this prefetch while it ran.
    const unclaimed = prefetch && this.prefetching.delete(storeHash);
    if (hit) {
      const { origin, info } = hit;
      const fallback = origin.kind === 'upstream' && trail.lanSaid.length ? { to: origin.name, lan: [...trail.lanSaid] } : undefined;
      if (fallback && !unclaimed) this.stats.narinfoFallback(storeHash, fallback.to, fallback.lan);
      const { facts, refs } = keptFacts(info, storeHash);
      const found: Resolution = { status: 'found', origin, text: serialiseNarInfo(servedNarInfo(info)), facts, refs };
      if (current) {
        this.cache.set(storeHash, found, { ttl: this.options.hitTtlSeconds * 1000 });
        const ordered = this.origins.ordered();
        this.elsewhere.record(storeHash, ordered.slice(0, ordered.indexOf(origin)).filter((o) => o.kind === 'lan' && !trail.absent.has(o)));
        if (unclaimed) this.unclaimed.set(storeHash, fallback ? { fallback } : {});
      }
      return found;
    }
    const { unknown } = trail;
    const miss: Resolution = unknown.length ? { status: 'unavailable', unknown } : { status: 'missing' };
    if (unknown.length) this.log.debug({ storeHash, unknown, prefetch }, 'narinfo not found; some origins could not be asked');
    if (this.options.missTtlSeconds > 0 && current && !(prefetch && unknown.length)) this.cache.set(storeHash, miss, { ttl: this.options.missTtlSeconds * 1000 });
    return miss;
  }

  /**
   * Asks `origins[from..]` in order for the first validly signed narinfo. An
   * origin whose circuit is open is skipped without waiting. One that has not
   * answered within its kind's hedge delay, and answered nothing else either
   * (origins/awake-wait.ts: a busy Pi, or a laptop too busy to read its
   * answers, is not a Pi that hangs), is not waited on alone: the rest of
   * the chain is asked alongside and the first present answer wins, so a Pi
   * that hangs costs the hedge delay, once, not its whole first-byte timeout.
   */
  private async firstPresent(origins: readonly Origin[], from: number, storeHash: string, trail: Trail): Promise<Found | undefined> {
    for (let i = from; i < origins.length; i++) {
      const origin = origins[i]!;
      if (origin.kind === 'peer') return this.peers.chain(origins, i, storeHash, (p) => this.ask(p, storeHash, trail), (end) => this.firstPresent(origins, end, storeHash, trail));
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
      const early = !hedged ? { value: await asking } : this.slow.has(origin) ? undefined : await settledUnlessQuiet(asking, origin.breaker, hedgeMs, BUSY_HEDGE_WINDOWS);
      if (!early) {
        this.slow.mark(origin);
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
    if (result.status === 'absent') trail.absent.add(origin);
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
    if (result.status !== 'unknown') this.slow.answered(origin);
    this.stats.narinfoLookup(origin.name, outcomeOf(result), performance.now() - started);
    return result;
  }
}
