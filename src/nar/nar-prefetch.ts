import type { Origin } from '../origins/origin.js';
import type { NarFacts } from './candidates.js';
import { openNar, SourceError } from './nar-source.js';
import { ByteBudget } from './byte-budget.js';
import { Entry, Taken } from './prefetch-entry.js';

export interface NarPrefetchOptions {
  /** Decompressed NAR bytes held or reserved at once, at most (0: NAR prefetch is off). */
  budgetBytes: number;
  /** NARs fetched ahead of Nix at once. */
  concurrency: number;
  /** An offer, or a NAR fetched ahead, that Nix has not come for in this long is dropped. */
  idleMs: number;
  /** Offers waiting for a slot at most; the oldest are dropped beyond that. */
  maxQueued: number;
}

/** What the config does not set (its `cache.narPrefetchBytes` and `cache.narPrefetchConcurrency` are the rest). */
export const NAR_PREFETCH_LIMITS: Pick<NarPrefetchOptions, 'idleMs' | 'maxQueued'> = { idleMs: 30_000, maxQueued: 1024 };

export interface NarPrefetchCounters {
  /** A fetch ahead of Nix started. */
  started(): void;
  /** Nix came for a NAR fetched (or being fetched) ahead. */
  used(): void;
  /** A NAR fetched ahead was dropped before Nix came for it, with the bytes held for nothing. */
  wasted(bytes: number): void;
  /** An offer was not taken: larger than the whole budget, or the queue was full. */
  skipped(): void;
}

/** May this origin's copy be fetched ahead now (circuit closed, not quarantined, not marked slow)? */
export type Usable = (origin: Origin, storeHash: string) => boolean;

type Open = typeof openNar;


/**
 * Fetches NARs ahead of Nix into memory (docs/architecture.md, "NAR
 * prefetch"). Asking for a narinfo is Nix saying it lacks the path and will
 * want its NAR; the narinfo route offers each NAR it hands to a client, and
 * the NAR route takes it from here when Nix comes for it, also while it is
 * still arriving. Bounded: a fetch reserves its NarSize of the byte budget
 * before it starts and holds it until Nix's response ends or the entry is
 * dropped; offers wait for budget and a slot, newest first (Nix walks a
 * closure top-down and fetches NARs bottom-up, so the latest offers are the
 * deepest paths, the ones Nix fetches first). Nothing here is trusted: the
 * NAR route checks a prefetched NAR's size and hash like any other.
 */
export class NarPrefetcher {
  private readonly entries = new Map<string, Entry>();
  /** The same entries by NarHash (one per origin that was offered it). */
  private readonly byNar = new Map<string, Set<Entry>>();
  /** Offers not started yet, oldest first (started newest first). */
  private readonly queue: Entry[] = [];
  /** NAR bytes in memory: what is fetched ahead here, and what the NAR route holds back until verified (nar-hold.ts). */
  readonly budget: ByteBudget;
  private running = 0;

  constructor(
    private readonly options: NarPrefetchOptions,
    private readonly counters: NarPrefetchCounters,
    private readonly usable: Usable = () => true,
    private readonly openFile: Open = openNar,
  ) {
    this.budget = new ByteBudget(options.budgetBytes);
  }

  get enabled(): boolean {
    return this.options.budgetBytes > 0 && this.options.concurrency > 0;
  }

  /** The budget (0: off), bytes reserved, fetches running, offers waiting and NARs held: GET /_/health's `narPrefetch`. */
  get pending(): { budgetBytes: number; reservedBytes: number; running: number; queued: number; held: number } {
    return { budgetBytes: this.enabled ? this.options.budgetBytes : 0, reservedBytes: this.budget.reserved, running: this.running, queued: this.queue.length, held: this.entries.size - this.queue.length };
  }

  /** Nix was handed this narinfo: fetch its NAR from `origin` ahead, if it fits. */
  offer(origin: Origin, storeHash: string, facts: NarFacts): void {
    if (!this.enabled) return;
    const key = keyOf(origin, facts);
    if (this.entries.has(key)) return;
    if (facts.narSize > this.options.budgetBytes) {
      this.counters.skipped();
      return;
    }
    if (this.queue.length >= this.options.maxQueued) {
      this.drop(this.queue[0]!);
      this.counters.skipped();
    }
    const entry = new Entry(key, origin, storeHash, facts);
    this.entries.set(key, entry);
    const same = this.byNar.get(facts.narHash) ?? new Set<Entry>();
    same.add(entry);
    this.byNar.set(facts.narHash, same);
    this.queue.push(entry);
    this.idle(entry);
    setImmediate(() => this.pump());
  }

  /**
   * The NAR route's way to open one origin's NAR: the prefetched one if this
   * origin's copy with this NarHash was fetched ahead (or is on its way),
   * otherwise `openNar`. A prefetched NAR is handed out once; its budget is
   * freed when the route closes it.
   */
  open: Open = (origin, file, signal) => {
    const facts = file as NarFacts;
    if (facts.narHash) this.dropOthers(origin, facts.narHash);
    const entry = facts.narHash ? this.entries.get(keyOf(origin, facts)) : undefined;
    if (!entry || entry.taken || entry.state === 'queued') {
      if (entry?.state === 'queued') this.drop(entry, false);
      return this.openFile(origin, file, signal);
    }
    entry.taken = true;
    clearTimeout(entry.timer);
    this.counters.used();
    const taken = new Taken(entry, () => this.release(entry));
    signal.addEventListener('abort', () => taken.close(), { once: true });
    return entry.opening!.then((r) => (r.ok ? { ok: true, nar: taken } : (taken.close(), r)));
  };

  /**
   * Nix is getting this NAR from `origin`: a copy fetched ahead from another
   * origin (its narinfo came from there, and since then that origin went
   * away or came back) will not be asked for; it is dropped now rather than
   * held until the idle time (on a flapping link, dozens of them were).
   */
  private dropOthers(origin: Origin, narHash: string): void {
    for (const entry of [...(this.byNar.get(narHash) ?? [])]) {
      if (entry.origin !== origin && !entry.taken) this.drop(entry, true);
    }
  }

  /** Drops everything held and waiting (the proxy is closing). */
  clear(): void {
    for (const entry of [...this.entries.values()]) this.drop(entry, !entry.taken);
  }

  private pump(): void {
    while (this.running < this.options.concurrency && this.queue.length) {
      // Newest first, the first that fits the budget.
      let i = this.queue.length - 1;
      while (i >= 0 && !this.budget.fits(this.queue[i]!.facts.narSize)) i--;
      if (i < 0) return;
      const entry = this.queue.splice(i, 1)[0]!;
      if (!this.usable(entry.origin, entry.storeHash)) {
        this.drop(entry, false);
        continue;
      }
      this.start(entry);
    }
  }

  private start(entry: Entry): void {
    entry.state = 'running';
    this.budget.reserve(entry.facts.narSize);
    this.running++;
    this.counters.started();
    entry.opening = this.openFile(entry.origin, entry.facts, entry.abort.signal);
    void this.fill(entry).finally(() => {
      this.running--;
      this.pump();
    });
  }

  /** Reads the NAR into memory; never throws (a failure is kept for the taker, or drops the entry). */
  private async fill(entry: Entry): Promise<void> {
    const opened = await entry.opening!;
    if (!opened.ok) {
      entry.failure = opened.error;
      entry.state = 'done';
      if (!entry.taken) this.drop(entry, false);
      return;
    }
    entry.nar = opened.nar;
    const size = entry.facts.narSize;
    try {
      for await (const chunk of opened.nar.chunks) {
        if (entry.bytes + chunk.length > size) {
          // Longer than its NarSize: not the NAR its narinfo says; keep no more than the budget allows.
          const room = size - entry.bytes;
          if (room > 0) entry.chunks.push(chunk.subarray(0, room));
          entry.bytes = size;
          throw new SourceError('content', `longer than its NarSize (${size} bytes)`);
        }
        entry.chunks.push(chunk);
        entry.bytes += chunk.length;
        entry.notify();
      }
    } catch (err) {
      entry.failure = err instanceof SourceError ? err : new SourceError('transport', String(err));
      if (!entry.taken) this.drop(entry, true);
    } finally {
      entry.state = 'done';
      opened.nar.close();
      entry.notify();
    }
  }

  /** Forgets an entry nobody is reading; counts what was fetched for nothing. */
  private drop(entry: Entry, wasted = true): void {
    if (this.entries.get(entry.key) !== entry) return;
    this.entries.delete(entry.key);
    const same = this.byNar.get(entry.facts.narHash);
    same?.delete(entry);
    if (same?.size === 0) this.byNar.delete(entry.facts.narHash);
    const q = this.queue.indexOf(entry);
    if (q >= 0) this.queue.splice(q, 1);
    clearTimeout(entry.timer);
    if (entry.state !== 'queued') {
      if (entry.state === 'running') entry.abort.abort(); // a finished fetch has nothing left to stop
      entry.nar?.close();
      this.budget.release(entry.facts.narSize);
      if (wasted && !entry.taken) this.counters.wasted(entry.bytes);
    }
    entry.chunks.length = 0;
    setImmediate(() => this.pump());
  }

  /** The route is done with a taken entry: free its budget. */
  private release(entry: Entry): void {
    this.drop(entry, false);
  }

  private idle(entry: Entry): void {
    entry.timer = setTimeout(() => {
      if (!entry.taken) this.drop(entry, true);
    }, this.options.idleMs);
    entry.timer.unref();
  }
}

function keyOf(origin: Origin, facts: NarFacts): string {
  return `${origin.id} ${facts.narHash}`;
}
