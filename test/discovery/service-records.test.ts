import { describe, expect, it } from 'vitest';
import { ServiceRecords, type MdnsRecord } from '../../src/discovery/service-records.js';

const PTR = '_nix-cache._tcp.local';
const pi = (ttl = 120, address = '10.0.0.2'): MdnsRecord[] => [
  { name: PTR, type: 'PTR', ttl, data: `pi.${PTR}` },
  { name: `pi.${PTR}`, type: 'SRV', ttl, data: { port: 8080, target: 'pi.local' } },
  { name: `pi.${PTR}`, type: 'TXT', ttl, data: [Buffer.from('key=pi.lan-1'), Buffer.from('path=/cache/'), Buffer.from('__proto__=x'), Buffer.from('KEY=second')] },
  { name: 'pi.local', type: 'A', ttl, data: address },
];

describe('mDNS records as multicast-dns decodes them', () => {
  it('an instance is up once PTR, SRV, TXT and A are there; TXT keys are case-insensitive, the first wins, __proto__ is just ignored', () => {
    const r = new ServiceRecords(PTR);
    for (const rec of pi()) r.add(rec, 0);
    const { up, down } = r.update(0);
    expect(down).toEqual([]);
    expect(up).toEqual([{ name: `pi.${PTR}`, host: 'pi.local', addresses: ['10.0.0.2'], port: 8080, txt: { key: 'pi.lan-1', path: '/cache/' }, ttl: 120 }]);
    expect(Object.getPrototypeOf(up[0]!.txt)).toBe(Object.prototype);
  });

  it('a goodbye leaves 1 s; the same records again refute it', () => {
    const r = new ServiceRecords(PTR);
    for (const rec of pi()) r.add(rec, 0);
    r.update(0);
    expect(pi(0).map((rec) => r.add(rec, 10_000))).toEqual([true, true, true, true]);
    expect(r.update(10_500).down).toEqual([]);
    expect(r.update(11_001).down).toHaveLength(1);
    for (const rec of pi()) r.add(rec, 12_000);
    expect(r.update(12_000).up).toHaveLength(1);
  });

  it('records shaped by a stranger never throw and never grow it past its bounds', () => {
    const r = new ServiceRecords(PTR);
    const junk: unknown[] = [
      null, undefined, 7, 'x', {}, { name: 5 }, { name: PTR, type: 'PTR', ttl: Number.NaN, data: 'a' }, { name: PTR, type: 'PTR', ttl: -1, data: 'a' },
      { name: PTR, type: 'PTR', ttl: 10, data: { not: 'a string' } }, { name: `x.${PTR}`, type: 'SRV', ttl: 10, data: null },
      { name: `x.${PTR}`, type: 'SRV', ttl: 10, data: { target: 5, port: 'x' } }, { name: `x.${PTR}`, type: 'TXT', ttl: 10, data: 42 },
      { name: 'h.local', type: 'A', ttl: 10, data: '::1' }, { name: 'h.local', type: 'A', ttl: 10, data: { toString: () => '1.2.3.4' } },
      { name: `x.${PTR}`, type: 'TXT', ttl: 1e300, data: [Buffer.alloc(100_000, 65)] },
    ];
    for (const rec of junk) expect(() => r.add(rec as MdnsRecord, 0)).not.toThrow();
    for (let i = 0; i < 1000; i++) {
      r.add({ name: PTR, type: 'PTR', ttl: 120, data: `i${i}.${PTR}` }, 0);
      r.add({ name: `i${i}.${PTR}`, type: 'SRV', ttl: 120, data: { port: 1, target: `h${i}.local` } }, 0);
      r.add({ name: `i${i}.${PTR}`, type: 'TXT', ttl: 120, data: [Buffer.from('key=k')] }, 0);
      for (let a = 0; a < 20; a++) r.add({ name: `h${i}.local`, type: 'A', ttl: 120, data: `10.1.${i % 250}.${a}` }, 0);
    }
    const { up } = r.update(0);
    expect(up.length).toBeLessThanOrEqual(64);
    expect(Math.max(...up.map((s) => s.addresses.length))).toBeLessThanOrEqual(8);
  });
});
