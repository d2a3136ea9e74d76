import type { Logger } from 'pino';
import { drop } from '../origins/body.js';
import type { Origin } from '../origins/origin.js';
import { settledWithin } from './settle.js';

/**
 * A LAN cache that has not answered anything for this long is checked (its
 * nix-cache-info, within the hedge delay) before its cached answers are
 * served: a laptop that just left home must not hand Nix NAR URLs on a Pi
 * that no longer answers.
 */
export const QUIET_MS = 1000;

/**
 * The resolver's view of origins that are slow to answer narinfo lookups.
 * An origin whose lookup outlived the hedge delay is marked: until one of
 * its answers arrives, lookups ask the next origins alongside at once
 * instead of waiting the delay again (its circuit opens at the first-byte
 * timeout). And a LAN cache that has been quiet a while is checked before
 * its cached answers are handed out.
 */
export class LookupSlowness {
  private readonly slow = new Set<Origin>();
  /** A running liveness check per quiet LAN cache. */
  private readonly checking = new Map<Origin, Promise<boolean>>();

  constructor(
    private readonly log: Logger,
    private readonly quietMs = QUIET_MS,
    /** A marked origin answered again (its mark is cleared). */
    private readonly onAnswered: (origin: Origin) => void = () => {},
  ) {}

  has(origin: Origin): boolean {
    return this.slow.has(origin);
  }

  /** Its lookup outlived the hedge delay. */
  mark(origin: Origin): void {
    this.slow.add(origin);
  }

  /** It answered (anything but "could not be asked"). */
  answered(origin: Origin): void {
    if (this.slow.delete(origin)) this.onAnswered(origin);
  }

  clear(): void {
    this.slow.clear();
  }

  /**
   * Whether a cached answer from `origin` should not be served as is: its
   * circuit is open, it is marked slow, or it is a LAN cache or peer that has been
   * quiet for a while and does not answer its nix-cache-info within the
   * hedge delay (then it is marked slow). Only when an origin after it could
   * answer instead (`last`: it is the last origin). Synchronous unless a
   * check has to run.
   */
  suspect(origin: Origin, last: boolean, hedgeMs: number): boolean | Promise<boolean> {
    if (last) return false;
    if (origin.breaker.isOpen || this.slow.has(origin)) return true;
    if (hedgeMs <= 0 || origin.kind === 'upstream' || Date.now() - origin.breaker.lastSuccessAt < this.quietMs) return false;
    let check = this.checking.get(origin);
    if (!check) {
      check = this.checkAlive(origin, hedgeMs).finally(() => this.checking.delete(origin));
      this.checking.set(origin, check);
    }
    return check.then((alive) => !alive);
  }

  /** True if the origin answers its nix-cache-info within `hedgeMs`; otherwise it is marked slow until it answers. */
  private async checkAlive(origin: Origin, hedgeMs: number): Promise<boolean> {
    const asking = origin.fetchFile('nix-cache-info').then((res) => {
      if (res.status === 'present') drop(res.body, res.headers);
      const answered = res.status !== 'unknown';
      if (answered) this.answered(origin);
      return answered;
    });
    const early = await settledWithin(asking, hedgeMs);
    if (early) return early.value;
    this.slow.add(origin);
    this.log.info({ event: 'origin-slow', origin: origin.name, ms: hedgeMs }, `origin ${origin.name} did not answer within ${hedgeMs} ms; asking the next origins alongside`);
    return false;
  }
}
