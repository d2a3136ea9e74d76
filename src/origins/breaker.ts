import { EventEmitter } from 'node:events';

export type CircuitState = 'closed' | 'open';

export interface BreakerOptions {
  /** Consecutive failures that open the circuit (verdaccio's max_fails). */
  maxFails: number;
  /** How often an open circuit is probed in the background. */
  probeIntervalMs: number;
}

/**
 * A circuit breaker with a background probe instead of half-open requests:
 * while open, callers skip the origin at once and never wait on it; a timer
 * runs `probe` and closes the circuit as soon as the origin answers again.
 */
export class Breaker extends EventEmitter<{ change: [state: CircuitState, reason: string] }> {
  private fails = 0;
  private timer: NodeJS.Timeout | undefined;
  private probing = false;
  state: CircuitState = 'closed';
  changedAt = Date.now();
  lastReason = 'started';
  /** When the origin last answered anything (Date.now()): a response, or bytes of one; 0 before its first answer. */
  lastSuccessAt = 0;

  constructor(
    private readonly options: BreakerOptions,
    private readonly probe: () => Promise<boolean>,
  ) {
    super();
  }

  get isOpen(): boolean {
    return this.state === 'open';
  }

  success(): void {
    this.fails = 0;
    this.lastSuccessAt = Date.now();
    if (this.state === 'open') this.transition('closed', 'request succeeded');
  }

  /**
   * Bytes of a response came (a body still streaming): the origin is not
   * quiet, though no request succeeded or failed just now. An open circuit
   * stays open (a body started before it opened proves nothing new).
   */
  heard(): void {
    this.lastSuccessAt = Date.now();
  }

  failure(reason: string): void {
    this.fails++;
    if (this.state === 'closed' && this.fails >= this.options.maxFails) this.transition('open', reason);
  }

  /** Opens the circuit for a reason that is known to be final for now (e.g. link down). */
  trip(reason: string): void {
    this.fails = Math.max(this.fails, this.options.maxFails);
    if (this.state === 'closed') this.transition('open', reason);
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private transition(state: CircuitState, reason: string): void {
    this.state = state;
    this.changedAt = Date.now();
    this.lastReason = reason;
    if (state === 'open') this.startProbing();
    else this.close();
    this.emit('change', state, reason);
  }

  private startProbing(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.runProbe(), this.options.probeIntervalMs);
    this.timer.unref();
  }

  private async runProbe(): Promise<void> {
    if (this.probing || this.state !== 'open') return;
    this.probing = true;
    try {
      if (await this.probe()) {
        this.fails = 0;
        this.lastSuccessAt = Date.now();
        if (this.state === 'open') this.transition('closed', 'probe answered');
      }
    } catch {
      // A probe that throws is a probe that failed; the next tick tries again.
    } finally {
      this.probing = false;
    }
  }
}
