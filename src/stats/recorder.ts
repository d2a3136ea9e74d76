import type { NarInfoLookup, Origin, OriginKind } from '../origins/origin.js';
import type { OriginSet } from '../origins/origin-set.js';
import {
  dayKey,
  emptyBucket,
  emptyHistogram,
  emptyOriginCounters,
  emptyState,
  hourKey,
  KEEP_DAYS,
  KEEP_FALLBACKS,
  KEEP_HOURS,
  LATENCY_BUCKETS,
  prune,
  type Bucket,
  type Fallback,
  type LookupOutcome,
  type OriginCounters,
  type OriginHistory,
  type StatsState,
} from './model.js';

/** How one origin's answer to a narinfo lookup is counted. */
export function outcomeOf(result: NarInfoLookup): Exclude<LookupOutcome, 'skipped'> {
  if (result.status === 'present') return 'hit';
  if (result.status === 'absent') return result.reason === 'not-found' ? 'miss' : 'untrusted';
  return result.cause === 'timeout' ? 'timeout' : 'error';
}

export interface StatsOptions {
  /** The persisted state to continue from. */
  state?: StatsState;
  /** Called after every change (the persister schedules a save). */
  onChange?: () => void;
  now?: () => Date;
}

/**
 * Counters fed by the request path. The request path only calls the event
 * methods below; persistence lives in stats/persist.ts, presentation in
 * stats/snapshot.ts and stats/prometheus.ts.
 */
export class Stats {
  readonly startedAt = Date.now();
  readonly state: StatsState;
  private originSet: OriginSet | undefined;
  /** Where and when the counters were last saved; set by stats/setup.ts. */
  persistence: () => { file: string | null; lastSavedAt: Date | undefined; error: string | undefined } = () => ({ file: null, lastSavedAt: undefined, error: undefined });
  private readonly now: () => Date;
  private readonly onChange: () => void;

  constructor(
    private readonly kindOf: (name: string) => OriginKind | undefined = () => undefined,
    options: StatsOptions = {},
  ) {
    this.now = options.now ?? (() => new Date());
    this.state = options.state ?? emptyState(this.now());
    this.onChange = options.onChange ?? (() => {});
  }

  /** Follows the origins' circuits: current state for snapshots, transitions into the history. */
  attachOrigins(origins: OriginSet): void {
    this.originSet = origins;
    const seen = (o: Origin) => {
      const info = this.info(o.name, o.kind);
      info.url = o.baseUrl;
      info.kind = o.kind;
    };
    for (const o of origins.ordered()) seen(o);
    origins.on('added', seen);
    const change = (state: 'up' | 'down') => (o: Origin) => {
      const info = this.info(o.name, o.kind);
      if (state === 'up') info.ups++;
      else info.downs++;
      info.lastChange = { state, at: new Date(o.breaker.changedAt).toISOString(), reason: o.breaker.lastReason };
      this.onChange();
    };
    origins.on('up', change('up'));
    origins.on('down', change('down'));
  }

  get attached(): OriginSet | undefined {
    return this.originSet;
  }

  private info(name: string, kind?: OriginKind | 'unknown'): OriginHistory {
    let info = this.state.originInfo[name];
    if (!info) {
      info = { kind: kind ?? this.kindOf(name) ?? 'unknown', downs: 0, ups: 0, latency: emptyHistogram() };
      this.state.originInfo[name] = info;
    }
    return info;
  }

  private kind(name: string): OriginKind | 'unknown' {
    return this.kindOf(name) ?? this.state.originInfo[name]?.kind ?? 'unknown';
  }

  /** The buckets of the current hour, kept until the hour ends: the request path asks for them on every event. */
  private current: { from: number; until: number; buckets: Bucket[] } | undefined;

  /** The buckets an event at `now` counts in: since install, today, this hour. Old buckets are pruned here. */
  private buckets(): Bucket[] {
    const now = this.now();
    const t = now.getTime();
    if (this.current && t >= this.current.from && t < this.current.until) return this.current.buckets;
    const day = dayKey(now);
    const hour = hourKey(now);
    let d = this.state.days[day];
    if (!d) {
      d = this.state.days[day] = emptyBucket();
      prune(this.state.days, KEEP_DAYS);
    }
    let h = this.state.hours[hour];
    if (!h) {
      h = this.state.hours[hour] = emptyBucket();
      prune(this.state.hours, KEEP_HOURS);
    }
    const from = new Date(now.getFullYear(), now.getMonth(), now.getDate(), now.getHours()).getTime();
    const until = new Date(now.getFullYear(), now.getMonth(), now.getDate(), now.getHours() + 1).getTime();
    this.current = { from, until, buckets: [this.state.total, d, h] };
    return this.current.buckets;
  }

  private each(origin: string, f: (c: OriginCounters) => void): void {
    const kind = this.kind(origin);
    for (const b of this.buckets()) {
      const c = (b.origins[origin] ??= emptyOriginCounters(kind));
      if (c.kind === 'unknown') c.kind = kind;
      f(c);
    }
    this.onChange();
  }

  narinfoLookup(origin: string, outcome: LookupOutcome, ms: number): void {
    this.each(origin, (c) => c.narinfo[outcome]++);
    if (outcome === 'skipped') return;
    const h = this.info(origin).latency;
    const s = ms / 1000;
    let i = LATENCY_BUCKETS.findIndex((le) => s <= le);
    if (i < 0) i = LATENCY_BUCKETS.length;
    h.counts[i] = (h.counts[i] ?? 0) + 1;
    h.sum += s;
    h.count++;
  }

  /** The answer Nix got for one narinfo request to the proxy (found: from `origin`). */
  narinfoAnswered(result: 'found' | 'missing' | 'unavailable', origin?: string): void {
    for (const b of this.buckets()) {
      b.client.narinfo[result]++;
      if (origin) b.client.narinfoFrom[origin] = (b.client.narinfoFrom[origin] ?? 0) + 1;
    }
    this.onChange();
  }

  /** A lookup found a narinfo only on an upstream although LAN caches exist; `lan` is what each of them said. */
  narinfoFallback(storeHash: string, to: string, lan: Array<{ origin: string; outcome: LookupOutcome }>): void {
    if (!lan.length) return;
    this.fallback({ what: 'narinfo', to, storeHash, lan });
    this.onChange();
  }

  narinfoCache(found: boolean): void {
    this.state.narinfoCache[found ? 'found' : 'missing']++;
    this.onChange();
  }

  narinfoPrefetch(what: keyof StatsState['narinfoPrefetch']): void {
    this.state.narinfoPrefetch[what]++;
    this.onChange();
  }

  narPrefetch(what: 'started' | 'used' | 'skipped'): void {
    this.state.narPrefetch[what]++;
    this.onChange();
  }

  narPrefetchWasted(bytes: number): void {
    this.state.narPrefetch.wasted++;
    this.state.narPrefetch.wastedBytes += bytes;
    this.onChange();
  }

  narStarted(origin: string): void {
    this.each(origin, (c) => c.nar.requests++);
  }

  narBytes(origin: string, bytes: number, fill?: 'already-there' | 'filled'): void {
    this.each(origin, (c) => {
      c.nar.bytes += bytes;
      if (fill === 'filled') c.nar.filledBytes += bytes;
      else if (fill === 'already-there') c.nar.alreadyThereBytes += bytes;
    });
  }

  narError(origin: string): void {
    this.each(origin, (c) => c.nar.errors++);
  }

  /** An origin's copy of a path did not match its signed narinfo and is quarantined. */
  narQuarantined(origin: string, storeHash: string, reason: string): void {
    this.each(origin, (c) => c.nar.quarantined++);
    this.fallback({ what: 'quarantine', from: origin, storeHash, reason: reason.slice(0, 200) });
  }

  /** A NAR fetch the origin answered "absent" (404) or could not answer (refused, timeout, circuit open). */
  narUnavailable(origin: string, why: 'absent' | 'unavailable'): void {
    this.each(origin, (c) => c.nar[why]++);
  }

  /** A NAR was held back until verified (memory or disk), or could not be (none). */
  narHeld(origin: string, where: 'memory' | 'disk' | 'none'): void {
    this.each(origin, (c) => c.nar[where === 'memory' ? 'heldInMemory' : where === 'disk' ? 'heldOnDisk' : 'notHeld']++);
  }

  failover(from: string, to: string, storeHash?: string): void {
    this.each(from, (c) => c.failoversFrom++);
    this.each(to, (c) => c.failoversTo++);
    for (const b of this.buckets()) {
      const row = (b.failovers[from] ??= {});
      row[to] = (row[to] ?? 0) + 1;
    }
    this.fallback({ what: 'nar', from, to, ...(storeHash ? { storeHash } : {}) });
  }

  private fallback(f: Omit<Fallback, 'at'>): void {
    this.state.fallbacks.push({ at: this.now().toISOString(), ...f });
    if (this.state.fallbacks.length > KEEP_FALLBACKS) this.state.fallbacks.splice(0, this.state.fallbacks.length - KEEP_FALLBACKS);
  }
}
