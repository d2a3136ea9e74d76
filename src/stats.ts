import type { NarInfoLookup, Origin, OriginKind } from './origins/origin.js';
import type { OriginSet } from './origins/origin-set.js';

export type LookupOutcome = 'hit' | 'miss' | 'untrusted' | 'error' | 'timeout' | 'skipped';

/** How one origin's answer to a narinfo lookup is counted. */
export function outcomeOf(result: NarInfoLookup): Exclude<LookupOutcome, 'skipped'> {
  if (result.status === 'present') return 'hit';
  if (result.status === 'absent') return result.reason === 'not-found' ? 'miss' : 'untrusted';
  return /timeout/i.test(result.reason) ? 'timeout' : 'error';
}
export const LOOKUP_OUTCOMES: readonly LookupOutcome[] = ['hit', 'miss', 'untrusted', 'error', 'timeout', 'skipped'];

/** Upper bounds (seconds) of the narinfo lookup latency histogram, Prometheus style. */
export const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] as const;

export interface OriginCounters {
  kind: OriginKind | 'unknown';
  /** Lookups of `<hash>.narinfo` the proxy made at this origin, by outcome (skipped: circuit open, not asked). */
  narinfo: Record<LookupOutcome, number>;
  /** requests: NAR downloads that started; absent/unavailable: the origin had no NAR or could not be asked. */
  nar: { requests: number; bytes: number; errors: number; absent: number; unavailable: number };
  failoversFrom: number;
  failoversTo: number;
}

/** What Nix (the client) asked the proxy for and what it got. */
export interface ClientCounters {
  /** narinfo answers by outcome: found (200), missing (404: every origin said absent), unavailable (404: some could not be asked). */
  narinfo: { found: number; missing: number; unavailable: number };
  /** Which origin the found narinfos came from. */
  narinfoFrom: Record<string, number>;
}

export interface Bucket {
  origins: Record<string, OriginCounters>;
  client: ClientCounters;
  /** failovers[from][to] */
  failovers: Record<string, Record<string, number>>;
}

export interface Histogram {
  /** Per-bucket (not cumulative) counts; one more than LATENCY_BUCKETS for +Inf. */
  counts: number[];
  sum: number;
  count: number;
}

export interface OriginHistory {
  kind: OriginKind | 'unknown';
  url?: string;
  /** Times the circuit opened / closed since install. */
  downs: number;
  ups: number;
  lastChange?: { state: 'up' | 'down'; at: string; reason: string };
  latency: Histogram;
}

export interface Fallback {
  at: string;
  /** narinfo: the client's narinfo came from an upstream; nar: a NAR download moved to another origin. */
  what: 'narinfo' | 'nar';
  storeHash?: string;
  from?: string;
  to: string;
  /** For narinfo: what each LAN origin said first (miss, timeout, skipped...). */
  lan?: Array<{ origin: string; outcome: LookupOutcome }>;
}

/** Everything persisted; see docs/stats.md. */
export interface StatsState {
  version: 1;
  installedAt: string;
  total: Bucket;
  /** Local calendar days, `YYYY-MM-DD`. */
  days: Record<string, Bucket>;
  /** Local hours, `YYYY-MM-DDTHH`. */
  hours: Record<string, Bucket>;
  originInfo: Record<string, OriginHistory>;
  narinfoCache: { found: number; missing: number };
  /**
   * narinfos the proxy asked for ahead of Nix (references of what Nix asked):
   * lookups started, used (Nix asked for one afterwards), dropped (queue full).
   * Their requests to origins are in the per-origin narinfo counts too.
   */
  narinfoPrefetch: { lookups: number; used: number; dropped: number };
  fallbacks: Fallback[];
}

export const KEEP_DAYS = 35;
export const KEEP_HOURS = 48;
export const KEEP_FALLBACKS = 50;

export function emptyBucket(): Bucket {
  return { origins: {}, client: { narinfo: { found: 0, missing: 0, unavailable: 0 }, narinfoFrom: {} }, failovers: {} };
}

export function emptyOriginCounters(kind: OriginKind | 'unknown'): OriginCounters {
  return {
    kind,
    narinfo: { hit: 0, miss: 0, untrusted: 0, error: 0, timeout: 0, skipped: 0 },
    nar: { requests: 0, bytes: 0, errors: 0, absent: 0, unavailable: 0 },
    failoversFrom: 0,
    failoversTo: 0,
  };
}

export function emptyHistogram(): Histogram {
  return { counts: new Array<number>(LATENCY_BUCKETS.length + 1).fill(0), sum: 0, count: 0 };
}

export function emptyState(now = new Date()): StatsState {
  return { version: 1, installedAt: now.toISOString(), total: emptyBucket(), days: {}, hours: {}, originInfo: {}, narinfoCache: { found: 0, missing: 0 }, narinfoPrefetch: { lookups: 0, used: 0, dropped: 0 }, fallbacks: [] };
}

const pad = (n: number) => String(n).padStart(2, '0');
/** The machine's local day: "today" means the user's today. */
export function dayKey(d: Date): string {
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}
export function hourKey(d: Date): string {
  return `${dayKey(d)}T${pad(d.getHours())}`;
}

/** Adds `b` into `a` (used to sum days into "last 7 days"). */
export function addBucket(a: Bucket, b: Bucket): Bucket {
  for (const [name, c] of Object.entries(b.origins)) {
    const t = (a.origins[name] ??= emptyOriginCounters(c.kind));
    if (t.kind === 'unknown') t.kind = c.kind;
    for (const o of LOOKUP_OUTCOMES) t.narinfo[o] += c.narinfo[o] ?? 0;
    for (const k of Object.keys(t.nar) as Array<keyof OriginCounters['nar']>) t.nar[k] += c.nar[k] ?? 0;
    t.failoversFrom += c.failoversFrom;
    t.failoversTo += c.failoversTo;
  }
  for (const k of ['found', 'missing', 'unavailable'] as const) a.client.narinfo[k] += b.client.narinfo[k] ?? 0;
  for (const [name, n] of Object.entries(b.client.narinfoFrom)) a.client.narinfoFrom[name] = (a.client.narinfoFrom[name] ?? 0) + n;
  for (const [from, tos] of Object.entries(b.failovers)) {
    const row = (a.failovers[from] ??= {});
    for (const [to, n] of Object.entries(tos)) row[to] = (row[to] ?? 0) + n;
  }
  return a;
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

  narStarted(origin: string): void {
    this.each(origin, (c) => c.nar.requests++);
  }

  narBytes(origin: string, bytes: number): void {
    this.each(origin, (c) => (c.nar.bytes += bytes));
  }

  narError(origin: string): void {
    this.each(origin, (c) => c.nar.errors++);
  }

  /** A NAR fetch the origin answered "absent" (404) or could not answer (refused, timeout, circuit open). */
  narUnavailable(origin: string, why: 'absent' | 'unavailable'): void {
    this.each(origin, (c) => c.nar[why]++);
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

function prune(map: Record<string, Bucket>, keep: number): void {
  const keys = Object.keys(map).sort();
  for (const k of keys.slice(0, Math.max(0, keys.length - keep))) delete map[k];
}
