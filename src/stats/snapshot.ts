import type { OriginKind } from '../origins/origin.js';
import { type Stats } from './recorder.js';
import { addBucket, dayKey, emptyBucket, hourKey, LATENCY_BUCKETS, type Bucket, type Fallback, type LookupOutcome, type NarPrefetchCounts, type OriginCounters } from './model.js';

/** One period ("since install", "today", "last 7 days"); see docs/stats.md. */
export interface PeriodStats {
  /** First local day counted (for "since install", the install time). */
  from: string;
  client: {
    narinfoRequests: number;
    narinfoFound: number;
    narinfoMissing: number;
    narinfoUnavailable: number;
    narinfoFromLan: number;
    /** From other machines' shares (docs/sharing.md); absent in proxies older than peers. */
    narinfoFromPeers: number;
    narinfoFromUpstream: number;
  };
  /** lanBytes: from LAN caches; peerBytes: from other machines' shares; upstreamBytes: from upstreams. */
  nar: { requests: number; bytes: number; lanBytes: number; peerBytes: number; upstreamBytes: number };
  /** Shares in [0, 1] of what came over the LAN (LAN caches and peers); null when there was nothing to count. */
  lanHitRate: { byBytes: number | null; byNarinfo: number | null };
  /** NAR bytes that came from a LAN cache or a peer and did not cross the internet for it (a filling cache's `filledBytes` did, once, through it). */
  bytesKeptOffInternet: number;
  /**
   * NAR bytes from filling LAN caches (`fill=1`, `--lan-fill`): already there
   * (a hit: another machine fetched the path first, or the build server
   * pushed it) or filled for us (fetched from upstream through the Pi now).
   */
  fill: { alreadyThereBytes: number; filledBytes: number };
  failovers: number;
  origins: Record<string, OriginCounters>;
}

export interface OriginStatus {
  name: string;
  kind: OriginKind | 'unknown';
  url: string | null;
  /** Whether the proxy currently knows this origin (discovered caches come and go). */
  configured: boolean;
  state: 'up' | 'down' | 'gone';
  /** When the circuit last changed (or the proxy started watching it). */
  since: string | null;
  reason: string | null;
  downsSinceInstall: number;
  latency: { buckets: Array<{ le: number | '+Inf'; count: number }>; sumSeconds: number; count: number };
}

export interface StatsSnapshot {
  schema: 1;
  generatedAt: string;
  startedAt: string;
  installedAt: string;
  uptimeSeconds: number;
  persistence: { file: string | null; lastSavedAt: string | null; error: string | null };
  periods: { sinceInstall: PeriodStats; today: PeriodStats; last7Days: PeriodStats };
  origins: OriginStatus[];
  /** Hourly series for the last 48 hours, oldest first, one entry per hour (zeros included). */
  hourly: Array<{ hour: string; lanBytes: number; peerBytes: number; upstreamBytes: number; narinfoFromLan: number; narinfoFromPeers: number; narinfoFromUpstream: number; narinfoMissing: number }>;
  /** The latest times a narinfo came from an upstream or a NAR download moved origin, newest first. */
  recentFallbacks: Fallback[];
  narinfoMemoryCache: { found: number; missing: number };
  /** narinfos looked up ahead of Nix: started, used by a later client request, dropped (queue full). */
  narinfoPrefetch: { lookups: number; used: number; dropped: number };
  /** NARs fetched into memory ahead of Nix: started, used by Nix, wasted (and their bytes), skipped for the budget. */
  narPrefetch: NarPrefetchCounts;
}

export function period(b: Bucket, from: string): PeriodStats {
  let lanBytes = 0;
  let peerBytes = 0;
  let upstreamBytes = 0;
  let requests = 0;
  let failovers = 0;
  const fill = { alreadyThereBytes: 0, filledBytes: 0 };
  for (const c of Object.values(b.origins)) {
    requests += c.nar.requests;
    fill.alreadyThereBytes += c.nar.alreadyThereBytes ?? 0;
    fill.filledBytes += c.nar.filledBytes ?? 0;
    failovers += c.failoversTo;
    if (c.kind === 'lan') lanBytes += c.nar.bytes;
    else if (c.kind === 'peer') peerBytes += c.nar.bytes;
    else upstreamBytes += c.nar.bytes;
  }
  let fromLan = 0;
  let fromPeers = 0;
  let fromUpstream = 0;
  for (const [name, n] of Object.entries(b.client.narinfoFrom)) {
    const kind = b.origins[name]?.kind;
    if (kind === 'lan') fromLan += n;
    else if (kind === 'peer') fromPeers += n;
    else fromUpstream += n;
  }
  const n = b.client.narinfo;
  const ratio = (a: number, total: number) => (total > 0 ? a / total : null);
  return {
    from,
    client: {
      narinfoRequests: n.found + n.missing + n.unavailable,
      narinfoFound: n.found,
      narinfoMissing: n.missing,
      narinfoUnavailable: n.unavailable,
      narinfoFromLan: fromLan,
      narinfoFromPeers: fromPeers,
      narinfoFromUpstream: fromUpstream,
    },
    nar: { requests, bytes: lanBytes + peerBytes + upstreamBytes, lanBytes, peerBytes, upstreamBytes },
    lanHitRate: { byBytes: ratio(lanBytes + peerBytes, lanBytes + peerBytes + upstreamBytes), byNarinfo: ratio(fromLan + fromPeers, fromLan + fromPeers + fromUpstream) },
    bytesKeptOffInternet: lanBytes + peerBytes - fill.filledBytes,
    fill,
    failovers,
    origins: b.origins,
  };
}

export interface SnapshotContext {
  file: string | null;
  lastSavedAt: Date | undefined;
  error: string | undefined;
}

export function snapshot(stats: Stats, now = new Date()): StatsSnapshot {
  const s = stats.state;
  const ctx: SnapshotContext = stats.persistence();
  const today = dayKey(now);
  const week = emptyBucket();
  const weekDays: string[] = [];
  for (let i = 6; i >= 0; i--) {
    const d = new Date(now.getFullYear(), now.getMonth(), now.getDate() - i, 12);
    weekDays.push(dayKey(d));
  }
  for (const d of weekDays) if (s.days[d]) addBucket(week, s.days[d]!);

  const hourly: StatsSnapshot['hourly'] = [];
  for (let i = 47; i >= 0; i--) {
    const h = new Date(now.getTime() - i * 3600_000);
    const key = hourKey(h);
    const p = period(s.hours[key] ?? emptyBucket(), key);
    hourly.push({ hour: key, lanBytes: p.nar.lanBytes, peerBytes: p.nar.peerBytes, upstreamBytes: p.nar.upstreamBytes, narinfoFromLan: p.client.narinfoFromLan, narinfoFromPeers: p.client.narinfoFromPeers, narinfoFromUpstream: p.client.narinfoFromUpstream, narinfoMissing: p.client.narinfoMissing + p.client.narinfoUnavailable });
  }

  const live = stats.attached?.ordered() ?? [];
  const names = [...new Set([...live.map((o) => o.name), ...Object.keys(s.originInfo), ...Object.keys(s.total.origins)])];
  const origins: OriginStatus[] = names.map((name) => {
    const o = live.find((x) => x.name === name);
    const info = s.originInfo[name];
    const lat = info?.latency;
    let cum = 0;
    const buckets = lat
      ? [...LATENCY_BUCKETS, '+Inf' as const].map((le, i) => ({ le, count: (cum += lat.counts[i] ?? 0) }))
      : [];
    return {
      name,
      kind: o?.kind ?? info?.kind ?? s.total.origins[name]?.kind ?? 'unknown',
      url: o?.baseUrl ?? info?.url ?? null,
      configured: o !== undefined,
      state: o ? (o.breaker.isOpen ? 'down' : 'up') : 'gone',
      since: o ? new Date(o.breaker.changedAt).toISOString() : (info?.lastChange?.at ?? null),
      reason: o ? o.breaker.lastReason : (info?.lastChange?.reason ?? null),
      downsSinceInstall: info?.downs ?? 0,
      latency: { buckets, sumSeconds: lat?.sum ?? 0, count: lat?.count ?? 0 },
    };
  });
  // Configured origins first, in asking order.
  origins.sort((a, b) => rank(a) - rank(b));
  function rank(o: OriginStatus): number {
    const i = live.findIndex((x) => x.name === o.name);
    return i < 0 ? 1000 : i;
  }

  return {
    schema: 1,
    generatedAt: now.toISOString(),
    startedAt: new Date(stats.startedAt).toISOString(),
    installedAt: s.installedAt,
    uptimeSeconds: Math.round((now.getTime() - stats.startedAt) / 1000),
    persistence: { file: ctx.file, lastSavedAt: ctx.lastSavedAt?.toISOString() ?? null, error: ctx.error ?? null },
    periods: {
      sinceInstall: period(s.total, s.installedAt),
      today: period(s.days[today] ?? emptyBucket(), today),
      last7Days: period(week, weekDays[0]!),
    },
    origins,
    hourly,
    recentFallbacks: [...s.fallbacks].reverse(),
    narinfoMemoryCache: { ...s.narinfoCache },
    narinfoPrefetch: { ...s.narinfoPrefetch },
    narPrefetch: { ...s.narPrefetch },
  };
}

export type { LookupOutcome };
