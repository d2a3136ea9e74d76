import { setTimeout as sleep } from 'node:timers/promises';
import { LRUCache } from 'lru-cache';

/** What one client (an IP address) may take of the share (docs/sharing.md, "Limits"). */
export interface ShareLimits {
  /** Requests of all clients in flight at once (a NAR counts until its last byte). */
  maxInFlight: number;
  /** Requests of one client in flight at once. */
  clientMaxInFlight: number;
  /** Requests one client may start per second, sustained … */
  clientRequestsPerSecond: number;
  /** … and in a burst. */
  clientBurst: number;
  /** NAR bytes per second to one client (0: no limit). */
  clientBytesPerSecond: number;
}

/** Clients remembered (their token buckets); the least recent are forgotten beyond this. */
const MAX_CLIENTS = 4096;

interface Client {
  inFlight: number;
  tokens: number;
  refilledAt: number;
  /** When the client's NAR bytes may next flow (byte rate limit). */
  bytesFreeAt: number;
}

export type Admission = { ok: true; release(): void } | { ok: false; why: 'busy' | 'client-busy' | 'rate' };

/**
 * Bounds what clients take: requests in flight (all clients, and each
 * client), a token bucket of requests per client, and optionally a byte
 * rate per client for NARs. State per client is bounded (an LRU of clients).
 */
export class ClientLimits {
  private inFlight = 0;
  private readonly clients = new LRUCache<string, Client>({ max: MAX_CLIENTS });

  constructor(
    readonly limits: ShareLimits,
    private readonly now: () => number = Date.now,
  ) {}

  /** Lets one request of `client` in, or says why not; `release()` once its response is over (idempotent). */
  admit(client: string): Admission {
    const c = this.client(client);
    if (this.inFlight >= this.limits.maxInFlight) return { ok: false, why: 'busy' };
    if (c.inFlight >= this.limits.clientMaxInFlight) return { ok: false, why: 'client-busy' };
    const t = this.now();
    c.tokens = Math.min(this.limits.clientBurst, c.tokens + ((t - c.refilledAt) / 1000) * this.limits.clientRequestsPerSecond);
    c.refilledAt = t;
    if (c.tokens < 1) return { ok: false, why: 'rate' };
    c.tokens--;
    c.inFlight++;
    this.inFlight++;
    let released = false;
    return {
      ok: true,
      release: () => {
        if (released) return;
        released = true;
        c.inFlight--;
        this.inFlight--;
      },
    };
  }

  /** Waits until `bytes` more NAR bytes may go to `client` (at once without a byte rate). */
  async pace(client: string, bytes: number, signal?: AbortSignal): Promise<void> {
    const rate = this.limits.clientBytesPerSecond;
    if (rate <= 0) return;
    const c = this.client(client);
    const t = this.now();
    const start = Math.max(t, c.bytesFreeAt);
    c.bytesFreeAt = start + (bytes / rate) * 1000;
    if (start > t) await sleep(start - t, undefined, { signal }).catch(() => {});
  }

  get running(): number {
    return this.inFlight;
  }

  private client(ip: string): Client {
    let c = this.clients.get(ip);
    if (!c) {
      c = { inFlight: 0, tokens: this.limits.clientBurst, refilledAt: this.now(), bytesFreeAt: 0 };
      this.clients.set(ip, c);
    }
    return c;
  }
}
