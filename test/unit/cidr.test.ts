import { describe, expect, it } from 'vitest';
import { inNetworks, isPrivateLanAddress, parseCidr, PRIVATE_NETWORKS } from '../../src/protocol/cidr.js';

describe('CIDR networks (the share’s allow-list)', () => {
  it('parses and normalises IPv4 and IPv6 blocks; a bare address is one host', () => {
    expect(parseCidr('192.168.1.77/24').text).toBe('192.168.1.0/24');
    expect(parseCidr('10.0.0.1').text).toBe('10.0.0.1/32');
    expect(parseCidr('fd12:3456::1/16').text).toBe('fd12::/16');
    expect(parseCidr('::1').text).toBe('::1/128');
    expect(parseCidr('0.0.0.0/0').text).toBe('0.0.0.0/0');
    expect(parseCidr('2001:db8:0:0:1:0:0:1/128').text).toBe('2001:db8::1:0:0:1/128');
  });

  it('says what is wrong with a bad network', () => {
    expect(() => parseCidr('192.168.1.0/33')).toThrow(/prefix length must be 0 to 32/);
    expect(() => parseCidr('fd00::/129')).toThrow(/prefix length must be 0 to 128/);
    expect(() => parseCidr('home')).toThrow(/"home" is not a network in CIDR form/);
    expect(() => parseCidr('192.168.1.0/24/8')).toThrow(/not a network/);
    expect(() => parseCidr('300.1.1.1/8')).toThrow(/not a network/);
    expect(() => parseCidr('10.0.0.0/x')).toThrow(/prefix length/);
  });

  it('matches addresses as Node reports them: IPv4, IPv6, IPv4-mapped, with a zone', () => {
    const nets = PRIVATE_NETWORKS.map(parseCidr);
    for (const a of ['10.1.2.3', '172.31.255.255', '192.168.0.1', '169.254.1.1', '127.0.0.1', '::1', 'fd00::5', 'fe80::1%eth0', '::ffff:192.168.1.9']) expect(inNetworks(a, nets), a).toBe(true);
    for (const a of ['172.32.0.1', '8.8.8.8', '100.64.0.1', '2001:db8::1', '::ffff:8.8.8.8', 'not-an-address', '']) expect(inNetworks(a, nets), a).toBe(false);
    expect(inNetworks('::ffff:10.0.0.1', [parseCidr('10.0.0.0/8')])).toBe(true);
    expect(inNetworks('10.0.0.1', [parseCidr('fd00::/8')])).toBe(false);
  });

  it('listens by default on private LAN addresses only: never loopback, public or IPv6 link-local', () => {
    for (const a of ['192.168.1.5', '10.0.0.2', '172.16.0.1', '169.254.9.9', 'fd00::2']) expect(isPrivateLanAddress(a), a).toBe(true);
    for (const a of ['127.0.0.1', '::1', '8.8.8.8', '100.64.1.1', 'fe80::1', '2a00::1']) expect(isPrivateLanAddress(a), a).toBe(false);
  });
});
