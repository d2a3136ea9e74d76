import { isIPv4, isIPv6 } from 'node:net';

/**
 * Networks as CIDR blocks (`10.0.0.0/8`, `fd00::/8`), and whether an address
 * is in one: the share's allow-list of clients (docs/sharing.md). Pure.
 */
export interface Cidr {
  /** As written, normalised: `10.0.0.0/8`. */
  text: string;
  family: 4 | 6;
  bits: bigint;
  prefix: number;
}

/**
 * The networks a machine's LAN is on: RFC 1918, IPv4 link-local (no DHCP:
 * two laptops on a cable), IPv6 unique-local and link-local, and loopback
 * (the machine itself; reachable only when the share listens there).
 */
export const PRIVATE_NETWORKS: readonly string[] = ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '169.254.0.0/16', '127.0.0.0/8', 'fc00::/7', 'fe80::/10', '::1/128'];

export class CidrError extends Error {
  override name = 'CidrError';
}

/** Parses `ADDRESS/PREFIX` (a bare address is a /32 or /128); throws a CidrError that says what is wrong. */
export function parseCidr(text: string): Cidr {
  const [address = '', prefixText, ...rest] = text.trim().split('/');
  const family = isIPv4(address) ? 4 : isIPv6(address) ? 6 : undefined;
  if (!family || rest.length) throw new CidrError(`${JSON.stringify(text)} is not a network in CIDR form (e.g. 192.168.1.0/24 or fd00::/8)`);
  const width = family === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? width : /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!(prefix >= 0 && prefix <= width)) throw new CidrError(`${JSON.stringify(text)}: the prefix length must be 0 to ${width}`);
  const bits = toBits(address, family) & mask(prefix, width);
  return { text: `${fromBits(bits, family)}/${prefix}`, family, bits, prefix };
}

/** Whether `address` (as Node reports a peer: IPv4, IPv6, or IPv4-mapped `::ffff:a.b.c.d`) is in one of `networks`. */
export function inNetworks(address: string, networks: readonly Cidr[]): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
  const plain = mapped ?? address.replace(/%.*$/, ''); // a zone id (fe80::1%eth0) is not part of the address
  const family = isIPv4(plain) ? 4 : isIPv6(plain) ? 6 : undefined;
  if (!family) return false;
  const bits = toBits(plain, family);
  const width = family === 4 ? 32 : 128;
  return networks.some((n) => n.family === family && (bits & mask(n.prefix, width)) === n.bits);
}

function mask(prefix: number, width: number): bigint {
  return prefix === 0 ? 0n : ((1n << BigInt(prefix)) - 1n) << BigInt(width - prefix);
}

function toBits(address: string, family: 4 | 6): bigint {
  if (family === 4) return address.split('.').reduce((acc, part) => (acc << 8n) | BigInt(Number(part)), 0n);
  // Expand `::` and a trailing dotted quad into eight 16-bit groups.
  let text = address;
  const quad = /(\d+\.\d+\.\d+\.\d+)$/.exec(text)?.[1];
  if (quad) {
    const v = toBits(quad, 4);
    text = `${text.slice(0, -quad.length)}${(v >> 16n).toString(16)}:${(v & 0xffffn).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = tail === undefined ? left : [...left, ...new Array<string>(8 - left.length - right.length).fill('0'), ...right];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
}

function fromBits(bits: bigint, family: 4 | 6): string {
  if (family === 4) return [24n, 16n, 8n, 0n].map((s) => String((bits >> s) & 0xffn)).join('.');
  const groups = Array.from({ length: 8 }, (_, i) => ((bits >> BigInt(112 - i * 16)) & 0xffffn).toString(16));
  // The longest run of zero groups (two or more) becomes `::`.
  let best = { at: -1, len: 1 };
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > best.len) best = { at: i, len: j - i };
    i = j === i ? i + 1 : j;
  }
  if (best.at < 0) return groups.join(':');
  return `${groups.slice(0, best.at).join(':')}::${groups.slice(best.at + best.len).join(':')}`;
}

/**
 * Whether an interface address is one the share listens on by default: a
 * private IPv4 address (RFC 1918 or link-local) or an IPv6 unique-local one;
 * never loopback, never public, never IPv6 link-local (it needs a zone).
 */
export function isPrivateLanAddress(address: string): boolean {
  return inNetworks(address, LISTEN_BY_DEFAULT);
}

const LISTEN_BY_DEFAULT = ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '169.254.0.0/16', 'fc00::/7'].map(parseCidr);
