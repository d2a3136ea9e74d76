import type { ServerResponse } from 'node:http';
import type { Hold } from './nar-hold.js';
import { planned, sendPart, type ResponsePlan } from './nar-response.js';

/**
 * Writes one origin's verified-so-far NAR bytes into the response: at once,
 * or, while a hold is set (nar-hold.ts), into the hold until `release()`
 * sends them all. A hold kept longer than `maxHoldMs` is released early and
 * the rest streamed, so Nix never waits near its stalled-download timeout
 * (300 s) for a huge NAR on a slow LAN cache.
 */
export class NarWriter {
  private hold: Hold | undefined;
  private holdUntil = 0;

  constructor(
    private readonly res: ServerResponse,
    private readonly plan: Extract<ResponsePlan, { start: number }>,
    private readonly signal: AbortSignal,
    private readonly onBlocked: (blocked: boolean) => void,
    private readonly sent: (bytes: number) => void,
  ) {}

  /** Holds every byte written from now on until `release()`. */
  holdBack(hold: Hold, maxHoldMs: number): void {
    this.hold = hold;
    this.holdUntil = Date.now() + maxHoldMs;
  }

  /** Bytes were written while held and have not been sent: the client has none of them. */
  get holding(): boolean {
    return this.hold !== undefined;
  }

  /** `chunk` is the NAR's bytes from offset `at`; the part the plan covers is sent or held. */
  async write(chunk: Buffer | undefined, at: number): Promise<void> {
    if (!chunk?.length) return;
    const part = planned(this.plan, chunk, at);
    if (!part) return;
    if (this.hold) {
      await this.hold.add(part);
      if (Date.now() >= this.holdUntil) await this.release();
      return;
    }
    this.sent(await sendPart(this.res, this.plan, part, this.signal, this.onBlocked));
  }

  /** Sends everything held, in order; from now on bytes go out as they are written. */
  async release(): Promise<void> {
    const hold = this.hold;
    if (!hold) return;
    this.hold = undefined;
    try {
      await hold.replay(async (part) => this.sent(await sendPart(this.res, this.plan, part, this.signal, this.onBlocked)));
    } finally {
      hold.discard();
    }
  }

  /** Drops whatever is held (the origin failed, or the client left). */
  discard(): void {
    this.hold?.discard();
    this.hold = undefined;
  }
}
