import { num } from '../stats/prometheus.js';

/**
 * What fill did since it started (kept in memory; a restart starts from zero).
 * Hits never reach fill: nginx serves them from the cache directory, so
 * "served again from the LAN" is counted from nginx's access log (docs/fill.md).
 */
export class FillStats {
  readonly startedAt = Date.now();
  /** narinfo requests fill answered with an upstream narinfo / with 404 (absent, untrusted, or upstream unreachable). */
  narinfoFound = 0;
  narinfoMissing = 0;
  narinfoUnavailable = 0;
  /** Upstream narinfos refused: no valid signature by a trusted key. */
  untrustedNarinfos = 0;
  /** NAR downloads started from upstream, and the bytes they brought. */
  narDownloads = 0;
  bytesFromUpstream = 0;
  /** NAR bytes sent to clients while filling. */
  bytesToClients = 0;
  /** Paths whose narinfo fill published (NAR in place, references too). */
  pathsFilled = 0;
  bytesFilled = 0;
  /** NARs whose FileHash/FileSize/NarHash/NarSize did not match their signed narinfo: nothing published. */
  hashFailures = 0;
  /** Downloads that broke off upstream. */
  upstreamFailures = 0;
  /** Downloads served to clients but not stored (disk full, over max size, cannot write). */
  notStored = 0;
  /** Publishing a narinfo failed (a reference could not be filled, the disk filled up). */
  publishFailures = 0;

  json(): Record<string, number | string> {
    const { startedAt, ...counters } = this;
    return { startedAt: new Date(startedAt).toISOString(), ...counters };
  }

  /** Prometheus text format 0.0.4, in the style of the proxy's /metrics. */
  prometheus(): string {
    const out: string[] = [];
    const counter = (name: string, help: string, samples: Array<[string, number]>) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} counter`);
      for (const [labels, v] of samples) out.push(`${name}${labels} ${num(v)}`);
    };
    counter('nix_lan_cache_fill_narinfo_requests_total', 'narinfo misses fill answered, by result.', [
      ['{result="found"}', this.narinfoFound],
      ['{result="missing"}', this.narinfoMissing],
      ['{result="unavailable"}', this.narinfoUnavailable],
    ]);
    counter('nix_lan_cache_fill_untrusted_narinfos_total', 'Upstream narinfos without a valid signature by a trusted key (never stored).', [['', this.untrustedNarinfos]]);
    counter('nix_lan_cache_fill_nar_downloads_total', 'NAR downloads started from upstream.', [['', this.narDownloads]]);
    counter('nix_lan_cache_fill_upstream_bytes_total', 'NAR bytes downloaded from upstream.', [['', this.bytesFromUpstream]]);
    counter('nix_lan_cache_fill_client_bytes_total', 'NAR bytes sent to clients while filling.', [['', this.bytesToClients]]);
    counter('nix_lan_cache_fill_paths_total', 'Paths published into the cache.', [['', this.pathsFilled]]);
    counter('nix_lan_cache_fill_bytes_total', 'NAR file bytes published into the cache.', [['', this.bytesFilled]]);
    counter('nix_lan_cache_fill_hash_failures_total', 'NARs that did not match their signed narinfo (nothing published).', [['', this.hashFailures]]);
    counter('nix_lan_cache_fill_upstream_failures_total', 'NAR downloads that broke off upstream.', [['', this.upstreamFailures]]);
    counter('nix_lan_cache_fill_not_stored_total', 'NARs served without being stored (disk full, over max size).', [['', this.notStored]]);
    counter('nix_lan_cache_fill_publish_failures_total', 'Verified NARs whose narinfo could not be published.', [['', this.publishFailures]]);
    out.push('# HELP nix_lan_cache_fill_start_time_seconds When fill started, Unix time.', '# TYPE nix_lan_cache_fill_start_time_seconds gauge');
    out.push(`nix_lan_cache_fill_start_time_seconds ${Math.floor(this.startedAt / 1000)}`);
    return out.join('\n') + '\n';
  }
}
