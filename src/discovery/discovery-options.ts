import { networkInterfaces as osNetworkInterfaces, type NetworkInterfaceInfo } from 'node:os';
import type { Logger } from 'pino';
import { checkCacheInfo } from '../origins/cache-info.js';
import type { OriginSet } from '../origins/origin-set.js';
import type { OriginTimeouts } from '../origins/timeouts.js';
import type { TrustedKeys } from '../protocol/signing.js';
import type { ServiceBrowser } from './browser.js';
import type { DiscoveryRole } from './roles.js';

export interface DiscoveryOptions {
  browser: ServiceBrowser;
  origins: OriginSet;
  trusted: TrustedKeys;
  timeouts: OriginTimeouts;
  /** Timeouts for a cache that announces `fill=1` (default: `timeouts`). */
  fillTimeouts?: OriginTimeouts;
  log: Logger;
  /** What is browsed for (default: LAN caches, `_nix-cache._tcp`; `peerRole(…)`: other machines' shares). */
  role?: DiscoveryRole;
  /** A discovered cache whose circuit stays open this long is dropped (default 30 s). */
  dropAfterMs?: number;
  /** How often the interface list is compared (default 1 s). */
  interfacePollMs?: number;
  /** How often an admitted cache's `nix-cache-info` is checked while its circuit is closed (default 5 s). */
  healthCheckMs?: number;
  /** A cache refused for a reason that may pass (not answering) is checked again after this (default 15 s). */
  recheckMs?: number;
  /** The origin priority of a cache that announces none (default 50; `--lan` caches get 10, 11, …). */
  defaultPriority?: number;
  networkInterfaces?: () => NodeJS.Dict<NetworkInterfaceInfo[]>;
  /** Whether a cache answers for /nix/store (undefined) or what is wrong; tests pass one they control. */
  checkCacheInfo?: (baseUrl: string, timeouts: OriginTimeouts) => Promise<string | undefined>;
}

/** The options with a default, resolved. */
export type DiscoveryTunables = Required<Omit<DiscoveryOptions, 'browser' | 'origins' | 'trusted' | 'timeouts' | 'fillTimeouts' | 'log' | 'role'>>;

export function withDefaults(options: DiscoveryOptions): DiscoveryTunables {
  return {
    dropAfterMs: options.dropAfterMs ?? 30_000,
    interfacePollMs: options.interfacePollMs ?? 1000,
    healthCheckMs: options.healthCheckMs ?? 5000,
    recheckMs: options.recheckMs ?? 15_000,
    defaultPriority: options.defaultPriority ?? 50,
    networkInterfaces: options.networkInterfaces ?? osNetworkInterfaces,
    checkCacheInfo: options.checkCacheInfo ?? checkCacheInfo,
  };
}
