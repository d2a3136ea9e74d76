import type { OriginKind } from '../origins/origin.js';

/**
 * The stats' data model: what is counted, in which buckets, and what is
 * persisted (docs/stats.md). Pure data and arithmetic; the Recorder
 * (recorder.ts) changes it, persist.ts saves it, snapshot.ts and
 * prometheus.ts present it.
 */

export type LookupOutcome = 'hit' | 'miss' | 'untrusted' | 'error' | 'timeout' | 'skipped';

export const LOOKUP_OUTCOMES: readonly LookupOutcome[] = ['hit', 'miss', 'untrusted', 'error', 'timeout', 'skipped'];

/** Upper bounds (seconds) of the narinfo lookup latency histogram, Prometheus style. */
export const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] as const;

export interface OriginCounters {
  kind: OriginKind | 'unknown';
  /** Lookups of `<hash>.narinfo` the proxy made at this origin, by outcome (skipped: circuit open, not asked). */
  narinfo: Record<LookupOutcome, number>;
  /**
   * requests: NAR downloads started; bytes: delivered to Nix (not read); errors: broke off or too slow; absent/unavailable: no NAR or not asked; quarantined: copy corrupt.
   * A filling LAN cache's bytes are also split: alreadyThereBytes (it had the file: another machine or the build server put it there) and filledBytes (it fetched them from upstream for this request).
   * heldInMemory / heldOnDisk: NARs held back whole until verified (another origin could serve them); notHeld: no room to hold, streamed as they came.
   * Older state files lack the last five: they load as 0.
   */
  nar: { requests: number; bytes: number; errors: number; absent: number; unavailable: number; quarantined: number; alreadyThereBytes: number; filledBytes: number; heldInMemory: number; heldOnDisk: number; notHeld: number };
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
  /** narinfo: the client's narinfo came from an upstream; nar: a NAR download moved to another origin; quarantine: `from`'s copy was corrupt. */
  what: 'narinfo' | 'nar' | 'quarantine';
  storeHash?: string;
  from?: string;
  to?: string;
  reason?: string; // quarantine: what was wrong
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
  /**
   * NARs the proxy fetched into memory ahead of Nix (for narinfos it handed
   * Nix): started, used (Nix came for it), wasted (dropped before Nix came:
   * not needed, or its origin failed) with the bytes held for nothing, and
   * skipped (larger than the byte budget, or the queue was full).
   */
  narPrefetch: NarPrefetchCounts;
  fallbacks: Fallback[];
}

export interface NarPrefetchCounts {
  started: number;
  used: number;
  wasted: number;
  wastedBytes: number;
  skipped: number;
}

export function emptyNarPrefetch(): NarPrefetchCounts {
  return { started: 0, used: 0, wasted: 0, wastedBytes: 0, skipped: 0 };
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
    nar: { requests: 0, bytes: 0, errors: 0, absent: 0, unavailable: 0, quarantined: 0, alreadyThereBytes: 0, filledBytes: 0, heldInMemory: 0, heldOnDisk: 0, notHeld: 0 },
    failoversFrom: 0,
    failoversTo: 0,
  };
}

export function emptyHistogram(): Histogram {
  return { counts: new Array<number>(LATENCY_BUCKETS.length + 1).fill(0), sum: 0, count: 0 };
}

export function emptyState(now = new Date()): StatsState {
  return { version: 1, installedAt: now.toISOString(), total: emptyBucket(), days: {}, hours: {}, originInfo: {}, narinfoCache: { found: 0, missing: 0 }, narinfoPrefetch: { lookups: 0, used: 0, dropped: 0 }, narPrefetch: emptyNarPrefetch(), fallbacks: [] };
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

/** Keeps the newest `keep` buckets (keys sort by time). */
export function prune(map: Record<string, Bucket>, keep: number): void {
  const keys = Object.keys(map).sort();
  for (const k of keys.slice(0, Math.max(0, keys.length - keep))) delete map[k];
}
