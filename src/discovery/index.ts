import type { Logger } from 'pino';
import type { OriginSet } from '../origins/origin-set.js';
import type { OriginTimeouts } from '../origins/timeouts.js';
import type { TrustedKeys } from '../protocol/signing.js';
import type { ServiceInstance } from './browser.js';
import { Discovery } from './discovery.js';
import { MdnsServiceBrowser } from './mdns-browser.js';
import { NIX_PEER_SERVICE, peerRole } from './roles.js';

export { Discovery, type DiscoverySnapshot, type DiscoveredCache } from './discovery.js';
export { DiscoveredOrigin } from './discovered-origin.js';
export { NIX_CACHE_SERVICE, type ServiceBrowser, type ServiceInstance } from './browser.js';
export { MdnsServiceBrowser } from './mdns-browser.js';
export { parseTxt } from './service-records.js';
export { NIX_PEER_SERVICE } from './roles.js';
export { ShareAnnouncer, ownShare } from './share-announcer.js';

/**
 * Discovery of `_nix-cache._tcp` caches over mDNS (one socket per interface),
 * feeding what proves itself into `origins`. Not started: call `start()` once
 * the proxy listens, and `stop()` on every way out.
 */
export function createDiscovery(deps: { origins: OriginSet; trusted: TrustedKeys; timeouts: OriginTimeouts; fillTimeouts?: OriginTimeouts; log: Logger }): Discovery {
  return new Discovery({ ...deps, browser: new MdnsServiceBrowser({ log: deps.log }) });
}

/**
 * Discovery of other machines' shares (`_nix-peer._tcp`, docs/sharing.md)
 * as peers in `origins`, with the same trust rules; `isSelf` tells this
 * machine's own announcement. Not started, like `createDiscovery`.
 */
export function createPeerDiscovery(deps: { origins: OriginSet; trusted: TrustedKeys; timeouts: OriginTimeouts; log: Logger; isSelf: (s: ServiceInstance) => boolean }): Discovery {
  const log = deps.log.child({ role: 'peers' });
  return new Discovery({ ...deps, log, role: peerRole(deps.isSelf), browser: new MdnsServiceBrowser({ log, serviceType: NIX_PEER_SERVICE }) });
}
