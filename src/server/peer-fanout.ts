import { LRUCache } from 'lru-cache';
import type { Origin } from '../origins/origin.js';
import { firstDefined, settledWithin } from './settle.js';

export interface PeerFanoutOptions {
  /** Peers asked at once for one narinfo. */
  width: number;
  /** A peer that had no answer for a path is not asked for it again for this long. */
  missTtlMs: number;
  /** Peers that have not answered within this long are not waited on alone: the next origins are asked alongside (0: never). */
  hedgeMs: number;
}

/** A peer that served a path this recently is asked first. */
const HOT_MS = 10 * 60_000;
const MAX_MISSES = 16_384;

/**
 * Asks other machines' shares (peers, docs/sharing.md) for a narinfo: the
 * run of peers in the asking order is asked like one origin, but only a few
 * of them at once (`width`): peers whose circuit is open are skipped, as are
 * peers that said they lack this path within `missTtlMs`; peers that served
 * hits lately go first, the others take turns. The first validly signed
 * answer wins. Like a LAN cache, the group is hedged: after `hedgeMs`
 * without an answer the origins after it are asked alongside, so a peer
 * that hangs costs the hedge delay, once (its first-byte timeout then opens
 * its circuit). A peer never makes a lookup wait longer than that, nor fail.
 */
export class PeerFanout {
  /** When each (peer, path) that had no answer may be asked again (Date.now() based, like the rest of the resolver's timing). */
  private readonly misses = new LRUCache<string, number>({ max: MAX_MISSES });
  private readonly lastHit = new WeakMap<Origin, number>();
  private turn = 0;

  constructor(private readonly options: PeerFanoutOptions) {}

  /**
   * `origins[from]` is a peer: asks the run of peers there, then (hedged, or
   * once they found nothing) `rest(end)`, the origins after the run.
   */
  async chain<T>(origins: readonly Origin[], from: number, storeHash: string, ask: (peer: Origin) => Promise<T | undefined>, rest: (end: number) => Promise<T | undefined>): Promise<T | undefined> {
    let end = from;
    while (end < origins.length && origins[end]!.kind === 'peer') end++;
    const asking = this.first(this.pick(origins.slice(from, end), storeHash), storeHash, ask);
    if (end >= origins.length) return asking;
    const early = this.options.hedgeMs > 0 ? await settledWithin(asking, this.options.hedgeMs) : { value: await asking };
    if (!early) return firstDefined(asking, rest(end));
    return early.value ?? rest(end);
  }

  /** The peers of `run` to ask for `storeHash`, at most `width`: up, not known to lack it; recent hits first, then in turn. */
  pick(run: readonly Origin[], storeHash: string): Origin[] {
    if (this.options.width <= 0) return [];
    const now = Date.now();
    const usable = run.filter((p) => !p.breaker.isOpen && !((this.misses.get(missKey(p, storeHash)) ?? 0) > now));
    const hot = usable.filter((p) => now - (this.lastHit.get(p) ?? -Infinity) < HOT_MS).sort((a, b) => this.lastHit.get(b)! - this.lastHit.get(a)!);
    const rest = usable.filter((p) => !hot.includes(p));
    const start = rest.length > 0 ? this.turn++ % rest.length : 0;
    return [...hot, ...rest.slice(start), ...rest.slice(0, start)].slice(0, this.options.width);
  }

  /** Asks `peers` at once; the first answer wins, undefined once none had one. Remembers who had none. */
  private first<T>(peers: Origin[], storeHash: string, ask: (peer: Origin) => Promise<T | undefined>): Promise<T | undefined> {
    if (peers.length === 0) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      let pending = peers.length;
      for (const peer of peers) {
        ask(peer).then((found) => {
          if (found !== undefined) {
            this.lastHit.set(peer, Date.now());
            resolve(found);
            return;
          }
          if (this.options.missTtlMs > 0) this.misses.set(missKey(peer, storeHash), Date.now() + this.options.missTtlMs);
          if (--pending === 0) resolve(undefined);
        }, reject);
      }
    });
  }
}

function missKey(peer: Origin, storeHash: string): string {
  return `${peer.id} ${storeHash}`;
}
