import type { Origin } from '../origins/origin.js';

/**
 * Cached narinfo answers that came from a later origin (an upstream) while a
 * LAN cache before it had not answered: the lookup went on without it
 * (hedged past a Pi that was slow, or busy, or blackholed). The NAR route
 * asks a cached answer's origin first, so such an answer keeps a path's NAR
 * on the upstream for as long as it is cached (an hour), even once the Pi
 * answers again; and Nix, whose own narinfo cache is warm, asks the proxy
 * for nothing but NARs (issue 22: the Pi back from a blackhole or a drip
 * was not used again). So when that LAN cache answers again, the resolver
 * drops the answers found elsewhere in its place (`takeFor`).
 */
export class FoundElsewhere {
  private readonly passed = new Map<string, readonly Origin[]>();

  /** `storeHash` was answered by another origin; `passedOver` are the LAN caches before it that had not said "absent". */
  record(storeHash: string, passedOver: readonly Origin[]): void {
    if (passedOver.length) this.passed.set(storeHash, passedOver);
    else this.passed.delete(storeHash);
  }

  /** The cached answer is gone. */
  forget(storeHash: string): void {
    this.passed.delete(storeHash);
  }

  clear(): void {
    this.passed.clear();
  }

  /** The store hashes answered elsewhere while `origin` had not answered; no longer recorded. */
  takeFor(origin: Origin): string[] {
    const hashes: string[] = [];
    for (const [storeHash, passedOver] of this.passed) {
      if (passedOver.includes(origin)) hashes.push(storeHash);
    }
    for (const h of hashes) this.passed.delete(h);
    return hashes;
  }
}
