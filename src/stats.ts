import type { OriginKind } from './origins/origin.js';

export type LookupOutcome = 'hit' | 'miss' | 'untrusted' | 'error' | 'timeout' | 'skipped';

export interface OriginCounters {
  kind: OriginKind | 'unknown';
  narinfo: Record<LookupOutcome, number>;
  nar: { requests: number; bytes: number; errors: number };
  failoversFrom: number;
  failoversTo: number;
}

/**
 * In-memory counters fed by the request path. The request path only calls
 * these methods; how they are kept, persisted and shown lives elsewhere.
 */
export class Stats {
  readonly startedAt = Date.now();
  readonly origins = new Map<string, OriginCounters>();
  readonly narinfoCacheHits = { found: 0, missing: 0 };

  constructor(private readonly kindOf: (name: string) => OriginKind | undefined = () => undefined) {}

  private origin(name: string): OriginCounters {
    let c = this.origins.get(name);
    if (!c) {
      c = {
        kind: this.kindOf(name) ?? 'unknown',
        narinfo: { hit: 0, miss: 0, untrusted: 0, error: 0, timeout: 0, skipped: 0 },
        nar: { requests: 0, bytes: 0, errors: 0 },
        failoversFrom: 0,
        failoversTo: 0,
      };
      this.origins.set(name, c);
    }
    return c;
  }

  narinfoLookup(origin: string, outcome: LookupOutcome, _ms: number): void {
    this.origin(origin).narinfo[outcome]++;
  }

  narinfoCache(found: boolean): void {
    this.narinfoCacheHits[found ? 'found' : 'missing']++;
  }

  narStarted(origin: string): void {
    this.origin(origin).nar.requests++;
  }

  narBytes(origin: string, bytes: number): void {
    this.origin(origin).nar.bytes += bytes;
  }

  narError(origin: string): void {
    this.origin(origin).nar.errors++;
  }

  failover(from: string, to: string): void {
    this.origin(from).failoversFrom++;
    this.origin(to).failoversTo++;
  }
}
