/** What the prefetcher needs from the resolver. */
export interface Warmer {
  /**
   * Starts a lookup of `storeHash` that lands in the resolver's cache and
   * in-flight map, and resolves to its references when found; undefined when
   * the path is already cached or being looked up (nothing to do).
   */
  warm(storeHash: string): Promise<readonly string[] | undefined> | undefined;
}

export interface PrefetchOptions {
  /** Prefetch lookups running at once (0: prefetching is off). */
  concurrency: number;
  /** Levels of references asked ahead of a client request (1: the references of what Nix asked). */
  depth: number;
  /** Store hashes waiting at most; more are dropped (counted). */
  maxQueued: number;
}

export interface PrefetchCounters {
  /** A hash could not be queued: the queue was full. */
  dropped(): void;
  /** A prefetch lookup threw (a bug: lookups answer present/absent/unknown). */
  failed(storeHash: string, err: unknown): void;
}

/**
 * Asks for the narinfos of a path's references before Nix does: Nix walks a
 * closure level by level, one round trip per level, and the narinfo it just
 * got lists the next level. A bounded FIFO of store hashes (a Set: a hash
 * many paths refer to is queued once) worked off by at most `concurrency`
 * lookups. Client lookups never wait on it: they go to the origins directly,
 * and join a prefetch already in flight for the same path.
 */
export class NarInfoPrefetcher {
  private readonly queued = new Set<string>();
  /** Depth still to go for each queued hash. */
  private readonly depthOf = new Map<string, number>();
  private running = 0;

  constructor(
    private readonly options: PrefetchOptions,
    private readonly warmer: Warmer,
    private readonly counters: PrefetchCounters,
  ) {}

  get enabled(): boolean {
    return this.options.concurrency > 0 && this.options.depth > 0;
  }

  /** Queues `refs` (store hashes), `depth` levels deep; runs after the current request has been answered. */
  ahead(refs: readonly string[], depth = this.options.depth): void {
    if (!this.enabled || depth < 1 || refs.length === 0) return;
    for (const hash of refs) {
      if (this.queued.has(hash)) continue;
      if (this.queued.size >= this.options.maxQueued) {
        this.counters.dropped();
        continue;
      }
      this.queued.add(hash);
      this.depthOf.set(hash, depth);
    }
    // The client's own answer goes out first; prefetching starts on the next turn of the loop.
    if (this.queued.size && this.running < this.options.concurrency) setImmediate(() => this.pump());
  }

  /** Forgets everything queued (cached answers were dropped: an origin came back). */
  clear(): void {
    this.queued.clear();
    this.depthOf.clear();
  }

  /** Waiting and running, for tests and the status of the queue. */
  get pending(): { queued: number; running: number } {
    return { queued: this.queued.size, running: this.running };
  }

  private pump(): void {
    while (this.running < this.options.concurrency && this.queued.size) {
      const hash = this.queued.values().next().value as string;
      this.queued.delete(hash);
      const depth = this.depthOf.get(hash) ?? 1;
      this.depthOf.delete(hash);
      const warming = this.warmer.warm(hash);
      if (!warming) continue;
      this.running++;
      warming
        .then((refs) => {
          if (refs && depth > 1) this.ahead(refs, depth - 1);
        })
        .catch((err: unknown) => this.counters.failed(hash, err))
        .finally(() => {
          this.running--;
          this.pump();
        });
    }
  }
}
