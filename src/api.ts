import type { OriginKind } from './origins/origin.js';
import type { CircuitState } from './origins/breaker.js';
import type { StatsSnapshot } from './stats/snapshot.js';

/**
 * The proxy's own JSON endpoints, one type each, shared by the routes that
 * answer them and the commands that read them (`stats`, `doctor`).
 */

/** `GET /_/health` */
export interface HealthResponse {
  ok: boolean;
  origins: HealthOrigin[];
  narPrefetch: NarPrefetchStatus;
  memory: MemoryStatus;
}

/** The process's memory now, in bytes (Node's process.memoryUsage()): what `stats` and the status page show. */
export interface MemoryStatus {
  /** Resident set size: what the OS counts. */
  rss: number;
  /** V8's heap: in use, and reserved. */
  heapUsed: number;
  heapTotal: number;
  /** Memory outside V8's heap held by JavaScript objects (Buffers among it). */
  external: number;
  arrayBuffers: number;
}

/** NARs held in memory ahead of Nix right now (docs/architecture.md, "NAR prefetch"). */
export interface NarPrefetchStatus {
  /** The byte budget (0: NAR prefetch is off). */
  budgetBytes: number;
  /** Bytes reserved by fetches running, NARs held and NARs being served from memory. */
  reservedBytes: number;
  /** Fetches running. */
  running: number;
  /** Offers waiting for budget or a slot. */
  queued: number;
  /** NARs fetched or being fetched, not yet done with. */
  held: number;
}

export interface HealthOrigin {
  name: string;
  kind: OriginKind;
  url: string;
  /** The origin's circuit: `closed` answers, `open` is skipped. */
  state: CircuitState;
  since: string;
  reason: string;
}

/** What `/_/stats` adds about the proxy itself (so `doctor` can compare it with nix.conf). */
export interface ProxyInfo {
  lan: string[];
  /** LAN caches given with `--lan-fill` (absent from proxies older than fill). */
  lanFill?: string[];
  upstream: string[];
  trustedPublicKeys: string[];
  priority: number;
}

/** `GET /_/stats` (schema in docs/stats.md) */
export type StatsResponse = StatsSnapshot & { proxy: ProxyInfo };

/** What the share gave one client (an IP address) since the proxy started. */
export interface ShareClientCounters {
  narinfoServed: number;
  narinfoNotShared: number;
  nars: number;
  bytes: number;
  refused: number;
  lastSeen: string;
}

/** What the share did since the proxy started (in memory; `GET /_/share`, docs/sharing.md). */
export interface ShareCounters {
  /** narinfos answered 200 / 404 (absent and not shared are one answer). */
  narinfoServed: number;
  narinfoNotShared: number;
  /** NAR responses started and NAR bytes sent. */
  nars: number;
  bytes: number;
  /** NARs that broke off: the client went away, or the store's bytes did not match their NarHash (then aborted). */
  narsAborted: number;
  narsMismatched: number;
  /** Connections and requests turned away, by reason. */
  refused: { network: number; busy: number; rate: number };
}

/** `GET /_/share` on the proxy's own listener (docs/sharing.md): what this machine shares and gave. */
export interface ShareSnapshot {
  enabled: true;
  /** The URLs other machines reach the share on now. */
  urls: string[];
  store: string;
  allow: string[];
  /** Paths signed by these keys (verified) are shared. */
  keyNames: string[];
  announced: boolean;
  totals: ShareCounters;
  /** The clients seen since the proxy started, most bytes first (at most 50). */
  clients: Array<{ client: string } & ShareClientCounters>;
}
