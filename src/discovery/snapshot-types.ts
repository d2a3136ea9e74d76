/** What `GET /_/discovery` and `nix-lan-cache stats` show about discovery (the JSON schema). */
export type CacheStatus = 'checking' | 'admitted' | 'refused' | 'lost' | 'gone';

/** What `stats` and `GET /_/discovery` show about one discovered cache. */
export interface DiscoveredCache {
  url: string;
  instance: string;
  keyName: string | undefined;
  priority: number;
  /** It announced `fill=1`: lookups wait for it instead of hedging to upstreams. */
  fill: boolean;
  status: CacheStatus;
  reason: string;
  firstSeen: string;
  lastAnnounced: string;
  decidedAt: string | undefined;
  /** Narinfos it served that its announced key verified / that it did not. */
  verified: number;
  untrusted: number;
  breaker?: { state: string; since: string; reason: string };
}

export interface DiscoveryEvent {
  at: string;
  event: string;
  url: string;
  instance: string;
  reason: string;
}

export interface DiscoverySnapshot {
  enabled: true;
  serviceType: string;
  trustedKeyNames: string[];
  caches: DiscoveredCache[];
  /** The latest decisions, oldest first. */
  events: DiscoveryEvent[];
}
