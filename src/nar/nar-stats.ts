/**
 * What the NAR path reports to the counters (src/stats.ts implements it). A
 * narrow interface of its own, so the NAR layer does not import the stats
 * unit beside it.
 */
/** Where a filling LAN cache's NAR bytes came from: its disk already, or upstream through it now. */
export type FillSource = 'already-there' | 'filled';

export interface NarStats {
  /** A NAR download from `origin` started. */
  narStarted(origin: string): void;
  /**
   * `bytes` of NAR from `origin` were delivered to the client. For a filling
   * LAN cache, `fill` says whether it had the file already (a hit: another
   * machine or the build server put it there) or filled it from upstream now.
   */
  narBytes(origin: string, bytes: number, fill?: FillSource): void;
  /** A download from `origin` broke off (or was left as too slow). */
  narError(origin: string): void;
  /** `origin` had no such file, or could not be asked. */
  narUnavailable(origin: string, why: 'absent' | 'unavailable'): void;
  /** `origin`'s copy of the path is not the NAR its signed narinfo describes. */
  narQuarantined(origin: string, storeHash: string, reason: string): void;
  /**
   * A NAR from `origin` was held back until verified, in memory or in a spool
   * file, or could not be (`none`: no room; streamed as it came).
   */
  narHeld(origin: string, where: 'memory' | 'disk' | 'none'): void;
  /** The download moved from one origin to another. */
  failover(from: string, to: string, storeHash?: string): void;
}
