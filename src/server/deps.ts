import type { Logger } from 'pino';
import type { ServeConfig } from '../config.js';
import type { OriginSet } from '../origins/origin-set.js';
import type { Stats } from '../stats.js';
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
}
