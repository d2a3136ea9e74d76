import type { Logger } from 'pino';
import type { ServeConfig } from '../config.js';
import type { Quarantine } from '../nar/quarantine.js';
import type { NarPrefetchOptions } from '../nar/nar-prefetch.js';
import type { SlowRule } from '../nar/rate-watch.js';
import type { OriginSet } from '../origins/origin-set.js';
import type { Stats } from '../stats/recorder.js';
import type { NarInfoResolver } from './narinfo-resolver.js';

/** Everything the proxy's HTTP app needs; `buildApp` takes it whole, so a test builds the very app that runs. */
export interface AppDeps {
  config: Pick<ServeConfig, 'priority' | 'lan' | 'upstream' | 'trustedPublicKeys'>;
  origins: OriginSet;
  resolver: NarInfoResolver;
  stats: Stats;
  log: Logger;
  /** mDNS discovery, when browsing is on: its snapshot is served at GET /_/discovery. */
  discovery?: { snapshot(): unknown };
  /** mDNS discovery of other machines' shares: served at GET /_/discovery as `peers`. */
  peerDiscovery?: { snapshot(): unknown };
  /** This machine's share, when on: its snapshot is served at GET /_/share (docs/sharing.md). */
  share?: { snapshot(): unknown };
  /** Origins' copies of paths found corrupt (default: a fresh one, in memory). */
  quarantine?: Quarantine;
  /** When a LAN cache is too slow for a NAR (default: under 100 KB/s for 5 s). */
  slowRule?: SlowRule;
  /** Fetching the NARs of the narinfos handed to Nix ahead of Nix, into memory (nar/nar-prefetch.ts); off when absent. */
  narPrefetch?: NarPrefetchOptions;
  /** Holding a LAN cache's or peer's NAR back until verified (nar/nar-hold.ts): in memory within the NAR prefetch budget, then spooled here; never held when absent. */
  narHold?: { spoolDir?: string | undefined; spoolBytes: number; maxHoldMs?: number };
  /** How long a LAN cache gets to start a NAR when another origin could serve it (nar/head-deadline.ts); no deadline when absent. */
  lanNarHeadMs?: number;
}
