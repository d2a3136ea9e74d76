import { describe, expect, it } from 'vitest';
import { DEBUGINFO_RE, hasDotSegment, LOG_RE, LS_RE, NARINFO_RE, REALISATION_RE } from '../../src/http/paths.js';
import { formatRange, parseRange } from '../../src/protocol/range.js';

const HASH = '3kklkssmzr75mhpv3s4qw1m26y4w6zrn';

describe('request paths the proxy accepts', () => {
  it('knows a narinfo, a listing, a log, a realisation and debug info by their names, and nothing else', () => {
    expect(NARINFO_RE.exec(`${HASH}.narinfo`)?.[1]).toBe(HASH);
    expect(NARINFO_RE.test(`${HASH.toUpperCase()}.narinfo`)).toBe(false);
    expect(NARINFO_RE.test(`${HASH.replace('3', 'e')}.narinfo`)).toBe(false); // e is not a nix32 letter
    expect(NARINFO_RE.test(`${HASH}x.narinfo`)).toBe(false);
    expect(NARINFO_RE.test(`${HASH}.narinfo/`)).toBe(false);
    expect(LS_RE.test(`${HASH}.ls`)).toBe(true);
    expect(LOG_RE.test(`${HASH}-hello-2.12.drv`)).toBe(true);
    expect(LOG_RE.test(`${HASH}-a/b`)).toBe(false);
    expect(REALISATION_RE.test(`sha256:${'1'.repeat(52)}!out.doi`)).toBe(true);
    expect(DEBUGINFO_RE.test('deadbeef')).toBe(true);
    expect(DEBUGINFO_RE.test('../x')).toBe(false);
  });

  it('refuses dot segments and backslashes, raw or percent-encoded, and malformed escapes', () => {
    for (const bad of ['/../x', '/a/./b', '/%2e%2e/x', '/%2E%2e%2fetc', '/a%5c..%5cb', '/a\\b', '/%zz', '/nar/..%2f..%2fsecret']) {
      expect(hasDotSegment(bad), bad).toBe(true);
    }
    for (const good of ['/', `/${HASH}.narinfo`, '/nar/abc-def.nar', '/a..b/c', '/.well-known-ish', '/x?y=../z']) {
      expect(hasDotSegment(good), good).toBe(false);
    }
  });
});

describe('byte ranges', () => {
  it('reads the single ranges Nix and curl send, and says "none" and "cannot honour" apart', () => {
    expect(parseRange(undefined)).toBeUndefined();
    expect(parseRange('bytes=0-')).toEqual({ start: 0 });
    expect(parseRange('bytes=1048576-')).toEqual({ start: 1048576 });
    expect(parseRange('bytes=10-19')).toEqual({ start: 10, end: 19 });
    expect(parseRange(' bytes=5-5 ')).toEqual({ start: 5, end: 5 });
    for (const bad of ['bytes=10-9', 'bytes=-500', 'bytes=0-1,5-9', 'items=0-', 'bytes=a-', 'bytes=1234567890123456-', '']) {
      expect(parseRange(bad), bad).toBeNull();
    }
  });

  it('formats a range back the way it was read', () => {
    for (const r of [{ start: 0 }, { start: 7, end: 9 }]) expect(parseRange(formatRange(r))).toEqual(r);
  });
});
