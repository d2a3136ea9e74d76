/**
 * What the NAR path reports to the counters (src/stats.ts implements it). A
 * narrow interface of its own, so the NAR layer does not import the stats
 * unit beside it.
 */
export interface NarStats {
  /** A NAR download from `origin` started. */
  narStarted(origin: string): void;
  /** `bytes` of NAR from `origin` were delivered to the client. */
  narBytes(origin: string, bytes: number): void;
  /** A download from `origin` broke off (or was left as too slow). */
  narError(origin: string): void;
  /** `origin` had no such file, or could not be asked. */
  narUnavailable(origin: string, why: 'absent' | 'unavailable'): void;
  /** `origin`'s copy of the path is not the NAR its signed narinfo describes. */
  narQuarantined(origin: string, storeHash: string, reason: string): void;
  /** The download moved from one origin to another. */
  failover(from: string, to: string, storeHash?: string): void;
}
