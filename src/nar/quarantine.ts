import { LRUCache } from 'lru-cache';

export interface QuarantineEntry {
  origin: string;
  storeHash: string;
  reason: string;
  at: string;
}

export interface QuarantineOptions {
  /** How long an origin's copy of a path is not used again (the Pi's owner may push it again). */
  ttlMs: number;
  maxEntries: number;
}

export const DEFAULT_QUARANTINE: QuarantineOptions = { ttlMs: 3600_000, maxEntries: 10_000 };

/**
 * Origins' copies of paths that turned out wrong (a NAR that does not match
 * its signed NarHash/NarSize, a file that is not a NAR, one that cannot be
 * decompressed). Until the entry expires, NAR requests for that path skip
 * that origin, so a corrupt file on the Pi costs at most one failed attempt.
 * In memory only: a restart gives every copy one more chance.
 */
export class Quarantine {
  private readonly entries: LRUCache<string, QuarantineEntry>;

  constructor(options: QuarantineOptions = DEFAULT_QUARANTINE) {
    this.entries = new LRUCache({ max: options.maxEntries, ttl: options.ttlMs });
  }

  private static key(originId: string, storeHash: string): string {
    return `${originId} ${storeHash}`;
  }

  add(originId: string, entry: QuarantineEntry): void {
    this.entries.set(Quarantine.key(originId, entry.storeHash), entry);
  }

  has(originId: string, storeHash: string): boolean {
    return this.entries.has(Quarantine.key(originId, storeHash));
  }

  /** The current entries, newest first. */
  list(): QuarantineEntry[] {
    return [...this.entries.values()].sort((a, b) => b.at.localeCompare(a.at));
  }
}
