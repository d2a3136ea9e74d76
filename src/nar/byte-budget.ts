/**
 * Bytes of NAR the proxy holds in memory at once: NARs fetched ahead of Nix
 * (nar-prefetch.ts) and NARs held back until verified (nar-hold.ts) share it
 * (`cache.narPrefetchBytes`). A reservation is made before the bytes come
 * and released when they are gone.
 */
export class ByteBudget {
  private used = 0;

  constructor(readonly limit: number) {}

  get reserved(): number {
    return this.used;
  }

  fits(bytes: number): boolean {
    return this.used + bytes <= this.limit;
  }

  tryReserve(bytes: number): boolean {
    if (!this.fits(bytes)) return false;
    this.used += bytes;
    return true;
  }

  /** Reserves whatever the budget says (the caller checked `fits`). */
  reserve(bytes: number): void {
    this.used += bytes;
  }

  release(bytes: number): void {
    this.used = Math.max(0, this.used - bytes);
  }
}
