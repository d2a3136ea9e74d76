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
