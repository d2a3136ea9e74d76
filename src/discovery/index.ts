import type { Logger } from 'pino';
import type { OriginSet } from '../origins/origin-set.js';
import type { OriginTimeouts } from '../origins/timeouts.js';
import type { TrustedKeys } from '../protocol/signing.js';
import { Discovery } from './discovery.js';
import { MdnsJsServiceBrowser } from './mdns-js-browser.js';

export { Discovery, type DiscoverySnapshot, type DiscoveredCache } from './discovery.js';
export { DiscoveredOrigin } from './discovered-origin.js';
export { NIX_CACHE_SERVICE, type ServiceBrowser, type ServiceInstance } from './browser.js';
export { MdnsJsServiceBrowser, parseTxt } from './mdns-js-browser.js';

/** Browses for `_nix-cache._tcp` with mdns-js and feeds what proves itself into `origins`. */
export function startDiscovery(deps: { origins: OriginSet; trusted: TrustedKeys; timeouts: OriginTimeouts; log: Logger }): Discovery {
  const discovery = new Discovery({ ...deps, browser: new MdnsJsServiceBrowser({ log: deps.log }) });
  discovery.start();
  return discovery;
}
