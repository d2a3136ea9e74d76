import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { decodeNix32, encodeNix32 } from '../../src/protocol/nix32.js';
import { parseSha256, sha256FromBytes } from '../../src/protocol/hash.js';
import { parsePublicKey, parseSecretKey } from '../../src/protocol/signing.js';
import { fingerprint, NarInfoError, parseNarInfo, serialiseNarInfo } from '../../src/protocol/narinfo.js';
import { formatLegacyNarUrl, formatNarUrl, parseNarUrl } from '../../src/protocol/narurl.js';

const SAMPLE = `StorePath: /nix/store/3kklkssmzr75mhpv3s4qw1m26y4w6zrn-x
URL: nar/03lzs95hsqhn8i2krdmlvw8r1q6mfcjrzg2cp18saf5a0f9f3jdn.nar.xz
Compression: xz
FileHash: sha256:03lzs95hsqhn8i2krdmlvw8r1q6mfcjrzg2cp18saf5a0f9f3jdn
FileSize: 128
NarHash: sha256:1z36l1l7cvc7d3x3y814zv4pdgx17j6i2i8ml4japbpzwc5yh155
NarSize: 120
References: 3kklkssmzr75mhpv3s4qw1m26y4w6zrn-x
Deriver: m9d41sykm8lkiq32gdhh2a5n3hjy3np6-x.drv
Sig: pi.lan-1:FhaAYLyFRp8TJK/z8JccpErBXzP7hluQYGVFWOy/ed4xetyWuIWNU8Eo1XKWyjG09g69KD3U+LwvtDX7hjw/Ag==
`;

describe('nix32', () => {
  it('round-trips and matches the hash Nix prints for a known input', () => {
    // `nix-hash --type sha256 --to-base32 $(echo -n "" | sha256sum)` = 0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73
    const empty = createHash('sha256').update('').digest();
    expect(encodeNix32(empty)).toBe('0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73');
    expect(Buffer.from(decodeNix32('0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73', 32)!).equals(empty)).toBe(true);
  });
  it('refuses letters outside the alphabet and wrong lengths', () => {
    expect(decodeNix32('e'.repeat(52), 32)).toBeUndefined();
    expect(decodeNix32('0'.repeat(51), 32)).toBeUndefined();
  });
  it('reads base16, nix32 and SRI sha256 forms as one canonical hash', () => {
    const bytes = createHash('sha256').update('x').digest();
    const canonical = sha256FromBytes(bytes);
    expect(parseSha256(`sha256:${bytes.toString('hex')}`)).toBe(canonical);
    expect(parseSha256(`sha256-${bytes.toString('base64')}`)).toBe(canonical);
    expect(parseSha256(canonical)).toBe(canonical);
    expect(parseSha256('md5:abc')).toBeUndefined();
  });
});

describe('narinfo', () => {
  it('parses, serialises back byte for byte, and fingerprints what the signature covers', () => {
    const info = parseNarInfo(SAMPLE);
    expect(info.narSize).toBe(120);
    expect(info.references).toEqual(['3kklkssmzr75mhpv3s4qw1m26y4w6zrn-x']);
    expect(serialiseNarInfo(info)).toBe(SAMPLE);
    expect(fingerprint(info)).toBe(
      '1;/nix/store/3kklkssmzr75mhpv3s4qw1m26y4w6zrn-x;sha256:1z36l1l7cvc7d3x3y814zv4pdgx17j6i2i8ml4japbpzwc5yh155;120;/nix/store/3kklkssmzr75mhpv3s4qw1m26y4w6zrn-x',
    );
  });
  it('keeps fields it does not know, and defaults Compression to bzip2 as Nix does', () => {
    const text = SAMPLE.replace('Compression: xz\n', '') + 'Future: thing\n';
    const info = parseNarInfo(text);
    expect(info.compression).toBe('bzip2');
    expect(serialiseNarInfo(info)).toContain('Future: thing\n');
  });
  it.each([
    ['a missing NarHash', SAMPLE.replace(/NarHash.*\n/, '')],
    ['a bad store path', SAMPLE.replace('/nix/store/3kk', '/tmp/3kk')],
    ['a non-numeric NarSize', SAMPLE.replace('NarSize: 120', 'NarSize: lots')],
    ['a line without a colon', SAMPLE + 'garbage\n'],
    ['a bad reference', SAMPLE.replace('References: 3kk', 'References: ../3kk')],
  ])('rejects %s with a NarInfoError', (_what, text) => {
    expect(() => parseNarInfo(text)).toThrow(NarInfoError);
  });
});

describe('NAR URLs handed out by the proxy', () => {
  const narHash = parseSha256('sha256:1z36l1l7cvc7d3x3y814zv4pdgx17j6i2i8ml4japbpzwc5yh155')!;
  const ref = {
    storeHash: '3kklkssmzr75mhpv3s4qw1m26y4w6zrn',
    narHash,
    compression: 'xz',
    originId: 'abc123',
    originUrl: 'nar/03lzs95hsqhn8i2krdmlvw8r1q6mfcjrzg2cp18saf5a0f9f3jdn.nar.xz',
  };
  it('name the NAR by store hash and NarHash, with no origin in it', () => {
    const url = formatNarUrl(ref.storeHash, narHash);
    expect(url).toBe(`nar/${ref.storeHash}-1z36l1l7cvc7d3x3y814zv4pdgx17j6i2i8ml4japbpzwc5yh155.nar`);
    expect(parseNarUrl(url.slice(4))).toEqual({ kind: 'content', storeHash: ref.storeHash, narHash });
  });
  it('still parse the legacy form Nix may hold for 30 days: readable for plain paths and encoded for anything else', () => {
    expect(formatLegacyNarUrl(ref)).toBe(`nar/${ref.storeHash}/1z36l1l7cvc7d3x3y814zv4pdgx17j6i2i8ml4japbpzwc5yh155/xz/abc123/${ref.originUrl}`);
    expect(parseNarUrl(formatLegacyNarUrl(ref).slice(4))).toEqual({ kind: 'legacy', ...ref });
    const odd = { ...ref, originUrl: 'nar/x.nar?hash=abc&y=../z' };
    expect(formatLegacyNarUrl(odd)).toMatch(/\/~[A-Za-z0-9_-]+$/);
    expect(parseNarUrl(formatLegacyNarUrl(odd).slice(4))).toEqual({ kind: 'legacy', ...odd });
  });
  it('refuses traversal and junk', () => {
    expect(parseNarUrl(`${ref.storeHash}/1z36l1l7cvc7d3x3y814zv4pdgx17j6i2i8ml4japbpzwc5yh155/xz/abc123/../../etc/passwd`)).toBeUndefined();
    expect(parseNarUrl('x/y/z')).toBeUndefined();
    expect(parseNarUrl(`${ref.storeHash}-1z36l1l7cvc7d3x3y814zv4pdgx17j6i2i8ml4japbpzwc5yh155.nar.xz`)).toBeUndefined();
    expect(parseNarUrl(`${ref.storeHash}-1z36l1l7cvc7d3x3y814zv4pdgx17j6i2i8ml4japbpzwc5yh15e.nar`)).toBeUndefined();
  });
});

describe('keys', () => {
  it('refuses malformed keys with a message that says what is wrong', () => {
    expect(() => parsePublicKey('nocolon')).toThrow(/NAME:BASE64/);
    expect(() => parsePublicKey('k:AAAA')).toThrow(/3 bytes, expected 32/);
    expect(() => parseSecretKey('k:AAAA')).toThrow(/expected 64/);
  });
});
