import { type Stats } from './recorder.js';
import { LATENCY_BUCKETS, LOOKUP_OUTCOMES } from './model.js';
import { snapshot } from './snapshot.js';

/** Escapes a label value per the Prometheus text exposition format. */
export function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function labels(l: Record<string, string>): string {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

/** Formats a number the way Prometheus reads it. */
export function num(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (n === Infinity) return '+Inf';
  if (n === -Infinity) return '-Inf';
  return String(n);
}

class Writer {
  private readonly out: string[] = [];
  family(name: string, type: 'counter' | 'gauge' | 'histogram', help: string): void {
    this.out.push(`# HELP ${name} ${help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`, `# TYPE ${name} ${type}`);
  }
  sample(name: string, l: Record<string, string>, v: number): void {
    this.out.push(`${name}${labels(l)} ${num(v)}`);
  }
  text(): string {
    return this.out.join('\n') + '\n';
  }
}

/**
 * The `/metrics` body, Prometheus text format 0.0.4. Counters are totals
 * since install (they survive restarts), so `rate()` works across restarts
 * except for the samples lost since the last save.
 */
export function prometheus(stats: Stats, now = new Date()): string {
  const s = stats.state;
  const snap = snapshot(stats, now);
  const w = new Writer();
  const origins = Object.entries(s.total.origins);

  w.family('nix_lan_cache_narinfo_requests_total', 'counter', 'narinfo lookups the proxy made at each origin, by outcome (skipped: circuit open, not asked).');
  for (const [origin, c] of origins) for (const outcome of LOOKUP_OUTCOMES) w.sample('nix_lan_cache_narinfo_requests_total', { origin, kind: c.kind, outcome }, c.narinfo[outcome]);

  w.family('nix_lan_cache_narinfo_lookup_duration_seconds', 'histogram', 'Time a narinfo lookup at an origin took (skipped lookups excluded).');
  for (const o of snap.origins) {
    if (!o.latency.count && !s.originInfo[o.name]) continue;
    for (const b of o.latency.buckets) w.sample('nix_lan_cache_narinfo_lookup_duration_seconds_bucket', { origin: o.name, kind: o.kind, le: b.le === '+Inf' ? '+Inf' : String(b.le) }, b.count);
    if (!o.latency.buckets.length) for (const le of [...LATENCY_BUCKETS.map(String), '+Inf']) w.sample('nix_lan_cache_narinfo_lookup_duration_seconds_bucket', { origin: o.name, kind: o.kind, le }, 0);
    w.sample('nix_lan_cache_narinfo_lookup_duration_seconds_sum', { origin: o.name, kind: o.kind }, o.latency.sumSeconds);
    w.sample('nix_lan_cache_narinfo_lookup_duration_seconds_count', { origin: o.name, kind: o.kind }, o.latency.count);
  }

  w.family('nix_lan_cache_nar_requests_total', 'counter', 'NAR downloads started from each origin.');
  for (const [origin, c] of origins) w.sample('nix_lan_cache_nar_requests_total', { origin, kind: c.kind }, c.nar.requests);
  w.family('nix_lan_cache_nar_bytes_total', 'counter', 'NAR bytes from each origin delivered to Nix (uncompressed; bytes read but not delivered are not counted).');
  for (const [origin, c] of origins) w.sample('nix_lan_cache_nar_bytes_total', { origin, kind: c.kind }, c.nar.bytes);
  w.family('nix_lan_cache_lan_fill_nar_bytes_total', 'counter', 'NAR bytes from a filling LAN cache delivered to Nix, by source: already-there (it had the file: another machine fetched it first, or it was pushed) or filled (fetched from upstream through it for this request).');
  for (const [origin, c] of origins) {
    if (c.kind !== 'lan' || !(c.nar.alreadyThereBytes || c.nar.filledBytes)) continue;
    w.sample('nix_lan_cache_lan_fill_nar_bytes_total', { origin, source: 'already-there' }, c.nar.alreadyThereBytes);
    w.sample('nix_lan_cache_lan_fill_nar_bytes_total', { origin, source: 'filled' }, c.nar.filledBytes);
  }
  w.family('nix_lan_cache_nar_errors_total', 'counter', 'NAR downloads from each origin that broke off mid-stream.');
  for (const [origin, c] of origins) w.sample('nix_lan_cache_nar_errors_total', { origin, kind: c.kind }, c.nar.errors);
  w.family('nix_lan_cache_nar_quarantined_total', 'counter', "Origins' copies of NARs found not to match their signed narinfo (wrong hash or size, not a NAR, undecompressable), and quarantined.");
  for (const [origin, c] of origins) w.sample('nix_lan_cache_nar_quarantined_total', { origin, kind: c.kind }, c.nar.quarantined);
  w.family('nix_lan_cache_nar_unavailable_total', 'counter', 'NAR fetches an origin could not serve: absent (404) or unavailable (refused, timeout, circuit open).');
  for (const [origin, c] of origins) {
    w.sample('nix_lan_cache_nar_unavailable_total', { origin, kind: c.kind, reason: 'absent' }, c.nar.absent);
    w.sample('nix_lan_cache_nar_unavailable_total', { origin, kind: c.kind, reason: 'unavailable' }, c.nar.unavailable);
  }
  w.family('nix_lan_cache_nar_holds_total', 'counter', "NARs from a LAN cache or peer held back until verified because another origin could serve them: in memory, on disk (spool), or none (no room: streamed as they came).");
  for (const [origin, c] of origins) {
    if (c.kind === 'upstream') continue;
    w.sample('nix_lan_cache_nar_holds_total', { origin, kind: c.kind, where: 'memory' }, c.nar.heldInMemory);
    w.sample('nix_lan_cache_nar_holds_total', { origin, kind: c.kind, where: 'disk' }, c.nar.heldOnDisk);
    w.sample('nix_lan_cache_nar_holds_total', { origin, kind: c.kind, where: 'none' }, c.nar.notHeld);
  }
  w.family('nix_lan_cache_failovers_total', 'counter', 'NAR downloads that moved from one origin to another.');
  for (const [from, tos] of Object.entries(s.total.failovers)) for (const [to, n] of Object.entries(tos)) w.sample('nix_lan_cache_failovers_total', { from, to }, n);

  w.family('nix_lan_cache_client_narinfo_requests_total', 'counter', 'narinfo requests Nix made to the proxy, by result (found: 200; missing and unavailable: 404).');
  const total = s.total.client.narinfo;
  for (const result of ['found', 'missing', 'unavailable'] as const) w.sample('nix_lan_cache_client_narinfo_requests_total', { result }, total[result]);
  w.family('nix_lan_cache_client_narinfo_served_total', 'counter', 'narinfos the proxy answered, by the origin they came from.');
  for (const [origin, n] of Object.entries(s.total.client.narinfoFrom)) w.sample('nix_lan_cache_client_narinfo_served_total', { origin, kind: s.total.origins[origin]?.kind ?? 'unknown' }, n);
  w.family('nix_lan_cache_narinfo_memory_cache_total', 'counter', "narinfo requests answered from the proxy's in-memory cache.");
  w.sample('nix_lan_cache_narinfo_memory_cache_total', { result: 'found' }, s.narinfoCache.found);
  w.sample('nix_lan_cache_narinfo_memory_cache_total', { result: 'missing' }, s.narinfoCache.missing);
  w.family('nix_lan_cache_narinfo_prefetch_total', 'counter', 'narinfos looked up ahead of Nix (lookups), later asked for by Nix (used), or not queued because the queue was full (dropped).');
  for (const result of ['lookups', 'used', 'dropped'] as const) w.sample('nix_lan_cache_narinfo_prefetch_total', { result }, s.narinfoPrefetch[result]);
  w.family('nix_lan_cache_nar_prefetch_total', 'counter', 'NARs fetched into memory ahead of Nix (started), later taken by Nix (used), dropped before Nix came (wasted), or not fetched because larger than the byte budget or the queue was full (skipped).');
  for (const result of ['started', 'used', 'wasted', 'skipped'] as const) w.sample('nix_lan_cache_nar_prefetch_total', { result }, s.narPrefetch[result]);
  w.family('nix_lan_cache_nar_prefetch_wasted_bytes_total', 'counter', 'Decompressed NAR bytes fetched ahead of Nix and dropped before Nix came for them.');
  w.sample('nix_lan_cache_nar_prefetch_wasted_bytes_total', {}, s.narPrefetch.wastedBytes);

  const p = snap.periods.sinceInstall;
  w.family('nix_lan_cache_bytes_kept_off_internet_total', 'counter', 'NAR bytes served from a LAN cache instead of an upstream, without crossing the internet for them (bytes a filling LAN cache fetched from upstream for the request are not counted).');
  w.sample('nix_lan_cache_bytes_kept_off_internet_total', {}, p.bytesKeptOffInternet);
  w.family('nix_lan_cache_lan_hit_ratio', 'gauge', 'Share served from the LAN since install: by NAR bytes and by narinfo hits (NaN when nothing was served).');
  w.sample('nix_lan_cache_lan_hit_ratio', { by: 'bytes' }, p.lanHitRate.byBytes ?? NaN);
  w.sample('nix_lan_cache_lan_hit_ratio', { by: 'narinfo' }, p.lanHitRate.byNarinfo ?? NaN);

  const live = snap.origins.filter((o) => o.configured);
  w.family('nix_lan_cache_origin_up', 'gauge', "1 when the origin's circuit is closed (it is asked), 0 when open.");
  for (const o of live) w.sample('nix_lan_cache_origin_up', { origin: o.name, kind: o.kind }, o.state === 'up' ? 1 : 0);
  w.family('nix_lan_cache_origin_state_change_timestamp_seconds', 'gauge', "When the origin's circuit last changed, Unix time.");
  for (const o of live) if (o.since) w.sample('nix_lan_cache_origin_state_change_timestamp_seconds', { origin: o.name, kind: o.kind }, Date.parse(o.since) / 1000);
  w.family('nix_lan_cache_origin_down_total', 'counter', "Times the origin's circuit opened.");
  for (const o of snap.origins) w.sample('nix_lan_cache_origin_down_total', { origin: o.name, kind: o.kind }, o.downsSinceInstall);

  w.family('nix_lan_cache_start_time_seconds', 'gauge', 'When this proxy process started, Unix time.');
  w.sample('nix_lan_cache_start_time_seconds', {}, Math.floor(stats.startedAt / 1000));
  w.family('nix_lan_cache_install_time_seconds', 'gauge', 'When the stats file was started, Unix time.');
  w.sample('nix_lan_cache_install_time_seconds', {}, Math.floor(Date.parse(s.installedAt) / 1000));
  return w.text();
}

/** Parses the text format back (for tests and `stats`): name{labels} value. */
export function parsePrometheus(text: string): Array<{ name: string; labels: Record<string, string>; value: number }> {
  const out: Array<{ name: string; labels: Record<string, string>; value: number }> = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${JSON.stringify(line)}`);
    const l: Record<string, string> = {};
    const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/g;
    let lm: RegExpExecArray | null;
    let consumed = 0;
    while ((lm = re.exec(m[2] ?? '')) !== null) {
      l[lm[1]!] = lm[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
      consumed += lm[0].length;
    }
    if (consumed !== (m[2] ?? '').length) throw new Error(`bad labels: ${JSON.stringify(line)}`);
    const v = m[3]!;
    out.push({ name: m[1]!, labels: l, value: v === '+Inf' ? Infinity : v === '-Inf' ? -Infinity : Number(v) });
  }
  return out;
}
