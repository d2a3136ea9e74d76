import type { Logger } from 'pino';
import type { ServeConfig } from '../config.js';
import type { Quarantine } from '../nar/quarantine.js';
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
  /** Origins' copies of paths found corrupt (default: a fresh one, in memory). */
  quarantine?: Quarantine;
  /** When a LAN cache is too slow for a NAR (default: under 100 KB/s for 5 s). */
  slowRule?: SlowRule;
}
