/**
 * The slow rule: a LAN cache that delivers fewer than `minBytesPerSecond`
 * over a whole `windowMs`, while another origin could serve the NAR, is left
 * for that origin at the same offset. Time during which the client (Nix) was
 * not reading does not count against the origin.
 *
 * Why these numbers (docs/architecture.md): a Pi on the slowest Wi-Fi still
 * serves megabytes per second; 100 KB/s for 5 s only catches a cache that is
 * failing (a dying SD card, a link about to drop, a Pi dripping bytes just
 * often enough to dodge the 5 s body-idle timeout), and costs at most 5 s
 * before going on from upstream.
 */
export interface SlowRule {
  minBytesPerSecond: number;
  windowMs: number;
}

export const DEFAULT_SLOW_RULE: SlowRule = { minBytesPerSecond: 100_000, windowMs: 5000 };

export class RateWatch {
  private timer: NodeJS.Timeout | undefined;
  private windowStart = 0;
  private bytesAtStart = 0;
  private clientBlocked = false;

  /**
   * Calls `onSlow` once when the rule is broken. `bytes()` is the origin's
   * byte count so far.
   */
  constructor(
    private readonly rule: SlowRule,
    private readonly bytes: () => number,
    private readonly onSlow: (bytesPerSecond: number) => void,
  ) {}

  start(): void {
    this.restart();
    const tick = Math.max(50, Math.floor(this.rule.windowMs / 5));
    this.timer = setInterval(() => this.check(), tick);
    this.timer.unref();
  }

  /** The client stopped reading (backpressure) or started again: a window with such a pause does not count. */
  blocked(isBlocked: boolean): void {
    this.clientBlocked = isBlocked;
    if (isBlocked) this.restart();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private restart(): void {
    this.windowStart = Date.now();
    this.bytesAtStart = this.bytes();
  }

  private check(): void {
    if (this.clientBlocked) return this.restart();
    const elapsed = Date.now() - this.windowStart;
    if (elapsed < this.rule.windowMs) return;
    const rate = ((this.bytes() - this.bytesAtStart) * 1000) / elapsed;
    if (rate < this.rule.minBytesPerSecond) {
      this.stop();
      this.onSlow(rate);
      return;
    }
    this.restart();
  }
}
