import type { PeerOrder } from '../origins/origin-set.js';
import { PRIVATE_NETWORKS } from '../protocol/cidr.js';
import { bool, int, object, oneOf, str, strList } from './checks.js';

/** The share's port (docs/sharing.md), on every private LAN address by default. */
export const DEFAULT_SHARE_PORT = 37517;
export const PEER_ORDERS: readonly PeerOrder[] = ['before-upstream', 'after-upstream'];

export interface ShareConfig {
  enable: boolean;
  /** `host` `lan`: every private address of the machine, as they come and go. */
  listen: { host: string; port: number };
  /** The Nix store shared, as Nix's `--store DIR` names it: `/` is the system store. */
  store: string;
  /** Networks (CIDR) whose machines may use the share. */
  allow: string[];
  /** Requests in flight (all clients; one client), requests per second and burst per client, NAR bytes/s per client (0: no limit). */
  maxInFlight: number;
  clientMaxInFlight: number;
  clientRequestsPerSecond: number;
  clientBurst: number;
  clientBytesPerSecond: number;
}

export function defaultShare(): ShareConfig {
  return {
    ...{ enable: false, listen: { host: 'lan', port: DEFAULT_SHARE_PORT }, store: '/', allow: [...PRIVATE_NETWORKS] },
    ...{ maxInFlight: 64, clientMaxInFlight: 32, clientRequestsPerSecond: 500, clientBurst: 2000, clientBytesPerSecond: 0 },
  };
}

/** The config file's `share` and `peering` keys. */
export const shareShape = object({
  ...{ enable: bool, listen: str, store: str, allow: strList, maxInFlight: int(1, 10_000), clientMaxInFlight: int(1, 10_000) },
  ...{ clientRequestsPerSecond: int(1, 1_000_000), clientBurst: int(1, 1_000_000), clientBytesPerSecond: int(0, 100 * 1024 ** 3) },
});
export const peeringShape = object({ order: oneOf(PEER_ORDERS), fanout: int(0, 64), missTtlSeconds: int(0, 3600) });
