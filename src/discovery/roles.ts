import type { ServiceInstance } from './browser.js';

/** The DNS-SD service type of another machine's share of its own store (docs/sharing.md). */
export const NIX_PEER_SERVICE = '_nix-peer._tcp';

/** At most this many key names are read from a peer's `keys=` record. */
const MAX_KEY_NAMES = 16;

/**
 * What Discovery browses for and how it judges what it finds: static LAN
 * caches (`_nix-cache._tcp`, docs/discovery.md) or other machines' shares
 * (`_nix-peer._tcp`, docs/sharing.md). The trust rules are the same (a
 * trusted key name, a nix-cache-info that answers, narinfos signed by the
 * announced key); these are the differences.
 */
export interface DiscoveryRole {
  serviceType: string;
  kind: 'lan' | 'peer';
  /** Origin names: `mdns:HOST:PORT` / `peer:HOST:PORT`. */
  namePrefix: string;
  /** The TXT record naming the signing key(s): `key` (one) or `keys` (comma-separated). */
  keyTxt: 'key' | 'keys';
  /**
   * When an admitted origin is refused for its narinfos: a cache that serves
   * one not signed by its key before any that is ('first-untrusted'); a peer
   * that serves one whose signature names an announced, trusted key and does
   * not verify, at any time ('forged'; a peer may well hold paths signed by
   * keys this machine does not trust, and says so honestly).
   */
  refuseOn: 'first-untrusted' | 'forged';
  /** Our own announcement, never admitted (a machine that shares hears itself). */
  isSelf?: (s: ServiceInstance) => boolean;
}

export const CACHE_ROLE: DiscoveryRole = { serviceType: '_nix-cache._tcp', kind: 'lan', namePrefix: 'mdns', keyTxt: 'key', refuseOn: 'first-untrusted' };

export function peerRole(isSelf: (s: ServiceInstance) => boolean): DiscoveryRole {
  return { serviceType: NIX_PEER_SERVICE, kind: 'peer', namePrefix: 'peer', keyTxt: 'keys', refuseOn: 'forged', isSelf };
}

/** The key names an announcement's key record claims. */
export function claimedKeyNames(role: DiscoveryRole, text: string | undefined): string[] {
  if (!text) return [];
  if (role.keyTxt === 'key') return [text];
  return [...new Set(text.split(',').map((k) => k.trim()).filter(Boolean))].slice(0, MAX_KEY_NAMES);
}
