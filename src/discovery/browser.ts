import type { EventEmitter } from 'node:events';

/** The DNS-SD service type of a Nix binary cache on the LAN (see docs/discovery.md). */
export const NIX_CACHE_SERVICE = '_nix-cache._tcp';

/** One DNS-SD service instance, as the browser currently sees it. */
export interface ServiceInstance {
  /** The full instance name, e.g. `pi._nix-cache._tcp.local`. */
  name: string;
  /** The SRV target host name. */
  host: string;
  /** IPv4 addresses from the host's A records, sorted. */
  addresses: string[];
  /** The SRV port. */
  port: number;
  /** TXT `key=value` pairs; keys lower-cased, the first occurrence of a key wins. */
  txt: Record<string, string>;
  /** Seconds until the first of the instance's records expires. */
  ttl: number;
}

export interface ServiceBrowserEvents {
  /** A new instance is complete (PTR, SRV, TXT and an A record), or one changed. */
  up: [ServiceInstance];
  /** An instance that was up expired (TTL ran out, or a goodbye packet that nobody refuted). */
  down: [ServiceInstance];
}

/**
 * Browses one DNS-SD service type. Swappable: the proxy only needs these
 * four methods and two events.
 */
export interface ServiceBrowser extends EventEmitter<ServiceBrowserEvents> {
  start(): void;
  /** The network changed (addresses, interfaces, wake from sleep): rebind and ask again. */
  refresh(reason: string): void;
  /** Instances currently up. */
  instances(): ServiceInstance[];
  stop(): Promise<void>;
}
