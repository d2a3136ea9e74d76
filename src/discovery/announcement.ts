import { normaliseBaseUrl } from '../origins/base-url.js';
import type { ServiceInstance } from './browser.js';

/** What an instance's TXT records claim about its cache. */
export interface Claim {
  /** `key=` (a cache), or a peer's `keys=` as announced (comma-separated names). */
  keyName: string | undefined;
  priority: number;
  priorityText: string | undefined;
  /** `fill=1`: the cache fills itself from upstream on a miss (`nix-lan-cache fill` behind it). */
  fill: boolean;
}

export interface Announcement {
  claim: Claim;
  /** The cache URLs it announces: one per usable address. */
  urls: Set<string>;
  /** Set when no URL is usable: why, and the URL as announced. */
  refusal?: { url: string; reason: string };
}

/** Reads an announcement (docs/discovery.md, "The announcement"): its claim and the cache URLs it names. */
export function readAnnouncement(s: ServiceInstance, defaultPriority: number, keyTxt: 'key' | 'keys' = 'key'): Announcement {
  const claim: Claim = { keyName: s.txt[keyTxt] || undefined, priorityText: s.txt.priority, priority: defaultPriority, fill: s.txt.fill === '1' };
  if (claim.priorityText !== undefined && /^\d{1,4}$/.test(claim.priorityText)) claim.priority = Number(claim.priorityText);
  const path = s.txt.path ?? '/';
  const urls = new Set<string>();
  let badPath: string | undefined;
  if (!/^\/[A-Za-z0-9._~\-/%]*$/.test(path) || path.split('/').some((seg) => seg === '..' || seg === '.')) badPath = path;
  else {
    for (const address of s.addresses) {
      // The laptop's own loopback (or 0.0.0.0, multicast) is never a LAN cache: don't let an announcement make us call it.
      if (!isLanAddress(address)) continue;
      try {
        urls.add(normaliseBaseUrl(`http://${address}:${s.port}${path}`));
      } catch {
        // not a usable URL; the instance is refused below if none is
      }
    }
  }
  if (urls.size > 0) return { claim, urls };
  const reason =
    badPath !== undefined
      ? `announced path ${JSON.stringify(badPath)} is not a plain URL path`
      : `announcement has no usable address (${s.addresses.join(', ') || 'none'}; loopback, 0/8 and multicast addresses are never used)`;
  return { claim, urls, refusal: { url: `http://${s.addresses[0] ?? '?'}:${s.port}${path}`, reason } };
}

/** An IPv4 address another machine on the LAN can have: not 0/8, loopback 127/8, multicast or reserved (224/3). */
export function isLanAddress(address: string): boolean {
  const first = Number(address.split('.')[0]);
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(address) && first !== 0 && first !== 127 && first < 224;
}

export function sameClaim(a: Claim | undefined, b: Claim | undefined): boolean {
  return a?.keyName === b?.keyName && a?.priority === b?.priority && a?.fill === b?.fill;
}
