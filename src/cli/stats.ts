import { parseCommandArgs } from './args.js';
import { DEFAULT_PORT } from '../config.js';
import { errorMessage } from '../errors.js';
import type { ShareSnapshot, StatsResponse } from '../api.js';
import type { PeriodStats } from '../stats/snapshot.js';
import type { DiscoverySnapshot } from '../discovery/discovery.js';
import { formatAge, formatBytes, formatPct } from '../format.js';

export const DEFAULT_URL = `http://127.0.0.1:${DEFAULT_PORT}`;

const HELP = `usage: nix-lan-cache stats [--url URL] [--json]

Shows what a running proxy served: LAN hit rate, bytes per origin, origin health.

  --url URL    the proxy (default ${DEFAULT_URL})
  --json       print the proxy's /_/stats document as is (schema: docs/stats.md)
`;




function table(rows: string[][], rightAlign: Set<number>): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows
    .map((r) => r.map((c, i) => (rightAlign.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd())
    .join('\n');
}

type Discovered = DiscoverySnapshot | { enabled: false };

/** The caches and peers mDNS found, and why any was refused (from /_/discovery). */
export function formatDiscovery(d: Discovered & { peers?: Discovered }, now = Date.now()): string {
  if (!d.enabled) return 'mDNS discovery is off (--no-mdns).\n';
  const part = (s: DiscoverySnapshot, what: string) => {
    if (s.caches.length === 0) return `mDNS discovery: no ${s.serviceType} announcement heard yet.\n`;
    const rows = [[`discovered ${what}`, what === 'peer' ? 'keys' : 'key', 'status', 'first seen', 'why']];
    for (const c of s.caches) rows.push([c.url, c.keyName ?? '–', c.fill ? `${c.status} (fills)` : c.status, formatAge(c.firstSeen, now), c.reason ?? '']);
    return `${table(rows, new Set())}\n`;
  };
  return part(d, 'cache') + (d.peers?.enabled ? `\n${part(d.peers, 'peer')}` : '');
}

/** What this machine shares with others (from /_/share; docs/sharing.md). */
export function formatShare(sh: ShareSnapshot | { enabled: false }): string {
  if (!sh.enabled) return 'not sharing this machine\'s store (serve --share turns it on).\n';
  const t = sh.totals;
  const out = [
    `sharing on ${sh.urls.join(', ') || '(no private LAN address now)'}: the paths of ${sh.store} signed by ${sh.keyNames.join(', ')}${sh.announced ? ', announced on mDNS' : ''}`,
    `  since the proxy started: ${t.narinfoServed} narinfos and ${t.nars} NARs (${formatBytes(t.bytes)}) given, ${t.narinfoNotShared} asked for and not shared; refused: ${t.refused.network} from other networks, ${t.refused.busy + t.refused.rate} over the limits`,
  ];
  if (sh.clients.length) {
    const rows = [['machine', 'narinfos', 'NARs', 'bytes', 'last seen']];
    for (const c of sh.clients.slice(0, 10)) rows.push([c.client, String(c.narinfoServed), String(c.nars), formatBytes(c.bytes), formatAge(c.lastSeen, Date.now())]);
    out.push(table(rows, new Set([1, 2, 3])).replace(/^/gm, '  '));
  }
  return `${out.join('\n')}\n`;
}

/** The readable report for a /_/stats document. */
export function formatStats(s: StatsResponse, url: string, now = Date.now()): string {
  const p = s.periods;
  const cols: Array<[string, PeriodStats]> = [['today', p.today], ['last 7 days', p.last7Days], ['since install', p.sinceInstall]];
  const out: string[] = [];
  out.push(`nix-lan-cache at ${url}: up ${formatAge(s.startedAt, now).replace(' ago', '')}, counting since ${s.installedAt}`);
  out.push('');
  out.push(
    table(
      [
        ['', ...cols.map(([n]) => n)],
        ['LAN hit rate, by NAR bytes', ...cols.map(([, c]) => formatPct(c.lanHitRate.byBytes))],
        ['LAN hit rate, by narinfo hits', ...cols.map(([, c]) => formatPct(c.lanHitRate.byNarinfo))],
        ['kept off the internet', ...cols.map(([, c]) => formatBytes(c.bytesKeptOffInternet))],
        ...(p.sinceInstall.nar.peerBytes || s.origins.some((o) => o.kind === 'peer') ? [['  from peers', ...cols.map(([, c]) => formatBytes(c.nar.peerBytes ?? 0))]] : []),
        ['from upstreams', ...cols.map(([, c]) => formatBytes(c.nar.upstreamBytes))],
        ...(Object.values(p.sinceInstall.fill).some((n) => n > 0)
          ? [
              ['filling Pi: already there', ...cols.map(([, c]) => formatBytes(c.fill?.alreadyThereBytes ?? 0))],
              ['filling Pi: filled for us', ...cols.map(([, c]) => formatBytes(c.fill?.filledBytes ?? 0))],
            ]
          : []),
        ['narinfo requests from Nix', ...cols.map(([, c]) => String(c.client.narinfoRequests))],
        ['  answered 404', ...cols.map(([, c]) => String(c.client.narinfoMissing + c.client.narinfoUnavailable))],
        ['NAR failovers', ...cols.map(([, c]) => String(c.failovers))],
        ['corrupt NARs quarantined', ...cols.map(([, c]) => String(Object.values(c.origins).reduce((n, o) => n + (o.nar.quarantined ?? 0), 0)))],
      ],
      new Set([1, 2, 3]),
    ),
  );
  out.push('');
  const rows = [['origin', 'kind', 'health', 'since', 'narinfo asked', 'hits', 'misses', 'errors', 'NARs', 'NAR bytes']];
  for (const o of s.origins) {
    const c = p.sinceInstall.origins[o.name];
    const asked = c ? c.narinfo.hit + c.narinfo.miss + c.narinfo.untrusted + c.narinfo.error + c.narinfo.timeout : 0;
    rows.push([
      o.name,
      o.kind,
      o.state,
      `${formatAge(o.since, now)}${o.state === 'down' && o.reason ? ` (${o.reason})` : ''}`,
      String(asked),
      String(c?.narinfo.hit ?? 0),
      String(c?.narinfo.miss ?? 0),
      String(c ? c.narinfo.error + c.narinfo.timeout + c.narinfo.untrusted : 0),
      String(c?.nar.requests ?? 0),
      formatBytes(c?.nar.bytes ?? 0),
    ]);
  }
  out.push(table(rows, new Set([4, 5, 6, 7, 8, 9])));
  if (s.recentFallbacks.length) {
    out.push('', 'recent fallbacks (newest first):');
    for (const f of s.recentFallbacks.slice(0, 5)) {
      const what =
        f.what === 'nar'
          ? `NAR moved from ${f.from} to ${f.to}`
          : f.what === 'quarantine'
            ? `NAR from ${f.from} quarantined (${f.reason})`
            : `narinfo from ${f.to}${f.lan?.length ? ` (${f.lan.map((l) => `${l.origin}: ${l.outcome}`).join(', ')})` : ''}`;
      out.push(`  ${formatAge(f.at, now).padEnd(11)} ${f.storeHash ? `${f.storeHash.slice(0, 12)}  ` : ''}${what}`);
    }
  }
  if (!s.persistence.file) out.push('', `note: counters are not saved across restarts${s.persistence.error ? ` (${s.persistence.error})` : ''}`);
  return out.join('\n') + '\n';
}

export async function fetchStats(url: string, timeoutMs = 5000): Promise<StatsResponse> {
  const res = await fetch(new URL('_/stats', url.endsWith('/') ? url : `${url}/`), { signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok) throw new Error(`HTTP ${res.status} from ${url}/_/stats`);
  return (await res.json()) as StatsResponse;
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs('stats', argv, { url: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, false);
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const url = (values.url ?? DEFAULT_URL).replace(/\/+$/, '');
  let s: StatsResponse;
  try {
    s = await fetchStats(url);
  } catch (err) {
    process.stderr.write(`nix-lan-cache stats: cannot get stats from ${url}: ${errorMessage(err)}\n  Is the proxy running? Start it with \`nix-lan-cache serve\`, or pass --url.\n`);
    return 1;
  }
  if (values.json) {
    process.stdout.write(`${JSON.stringify(s, null, 2)}\n`);
    return 0;
  }
  process.stdout.write(formatStats(s, url));
  // Discovery is a separate document; a proxy too old to have it just leaves this out.
  const get = <T>(path: string) =>
    fetch(`${url}${path}`, { signal: AbortSignal.timeout(5000) })
      .then((r) => (r.ok ? (r.json() as Promise<T>) : undefined))
      .catch(() => undefined);
  const discovery = await get<Discovered & { peers?: Discovered }>('/_/discovery');
  if (discovery) process.stdout.write(`\n${formatDiscovery(discovery)}`);
  const share = await get<ShareSnapshot | { enabled: false }>('/_/share');
  if (share) process.stdout.write(`\n${formatShare(share)}`);
  return 0;
}
