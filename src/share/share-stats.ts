import { LRUCache } from 'lru-cache';
import type { ShareClientCounters, ShareCounters } from '../api.js';

const MAX_CLIENTS = 256;

/** The share's own counters, kept in memory: what this machine gave, and to whom. */
export class ShareStats {
  readonly totals: ShareCounters = { narinfoServed: 0, narinfoNotShared: 0, nars: 0, bytes: 0, narsAborted: 0, narsMismatched: 0, refused: { network: 0, busy: 0, rate: 0 } };
  private readonly clients = new LRUCache<string, ShareClientCounters>({ max: MAX_CLIENTS });

  narinfo(client: string, shared: boolean): void {
    if (shared) this.totals.narinfoServed++;
    else this.totals.narinfoNotShared++;
    const c = this.client(client);
    if (shared) c.narinfoServed++;
    else c.narinfoNotShared++;
  }

  narStarted(client: string): void {
    this.totals.nars++;
    this.client(client).nars++;
  }

  narBytes(client: string, n: number): void {
    this.totals.bytes += n;
    this.client(client).bytes += n;
  }

  narEnded(how: 'aborted' | 'mismatched'): void {
    if (how === 'aborted') this.totals.narsAborted++;
    else this.totals.narsMismatched++;
  }

  refused(client: string, why: 'network' | 'busy' | 'rate'): void {
    this.totals.refused[why]++;
    if (why !== 'network') this.client(client).refused++; // strangers are counted, not remembered
  }

  /** The clients seen, most bytes first. */
  byClient(): Array<{ client: string } & ShareClientCounters> {
    return [...this.clients.entries()].map(([client, c]) => ({ client, ...c })).sort((a, b) => b.bytes - a.bytes || b.narinfoServed - a.narinfoServed);
  }

  private client(ip: string): ShareClientCounters {
    let c = this.clients.get(ip);
    if (!c) {
      c = { narinfoServed: 0, narinfoNotShared: 0, nars: 0, bytes: 0, refused: 0, lastSeen: '' };
      this.clients.set(ip, c);
    }
    c.lastSeen = new Date().toISOString();
    return c;
  }
}
