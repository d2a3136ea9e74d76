import { afterEach, describe, expect, it } from 'vitest';
import { parseNarInfo } from '../../src/protocol/narinfo.js';
import { TrustedKeys } from '../../src/protocol/signing.js';
import { behave } from '../helpers/fake-cache.js';
import { memoryKey } from '../helpers/nar-fixtures.js';
import { scenario, type Scenario } from './harness.js';

let s: Scenario | undefined;
afterEach(async () => {
  await s?.close();
  s = undefined;
});

const narRequests = (side: Scenario['pi']) => side.server.requests.filter((r) => r.url === side.url);

describe('narinfos the proxy serves: uncompressed NARs named by their content', () => {
  it('says Compression: none, FileHash = NarHash, FileSize = NarSize, a URL without any origin, and keeps the signature valid', async () => {
    s = await scenario();
    const text = await s.narinfo();
    const info = parseNarInfo(text);
    expect(text).toMatch(/^Compression: none$/m);
    expect(info.url).toBe(`nar/${s.fixture.storeHash}-${s.fixture.narHash.slice(7)}.nar`);
    expect(info.fileHash).toBe(s.fixture.narHash);
    expect(info.fileSize).toBe(s.fixture.narSize);
    expect(info.narHash).toBe(s.fixture.narHash);
    // The Pi signed it; the signature still verifies after the rewrite.
    expect(info.sigs.some((sig) => sig.startsWith('pi.lan-1:'))).toBe(true);
    const stranger = new TrustedKeys([memoryKey('other-1').publicKey]);
    expect(stranger.verify(info)).toBeUndefined();
    expect(s.origins.ordered()[0]!.name).toBe('pi');
  });
});

describe('a NAR request, whole', () => {
  it.each(['xz', 'zstd', 'bzip2', 'none'] as const)('a Pi storing %s: Nix gets exactly the NAR, uncompressed, with Content-Length = NarSize', async (compression) => {
    s = await scenario({ piCompression: compression });
    await s.narinfo();
    const res = await s.app.inject({ method: 'GET', url: s.narUrl() });
    expect(res.statusCode).toBe(200);
    expect(res.headers['accept-ranges']).toBe('bytes');
    expect(res.headers['content-encoding']).toBeUndefined();
    expect(Number(res.headers['content-length'])).toBe(s.fixture.narSize);
    expect(res.rawPayload.equals(s.fixture.nar)).toBe(true);
    expect(narRequests(s.pi)).toHaveLength(1);
    expect(narRequests(s.upstream)).toHaveLength(0);
  });

  it('HEAD answers the NAR\'s size and no body, without fetching the NAR', async () => {
    s = await scenario();
    await s.narinfo();
    const res = await s.app.inject({ method: 'HEAD', url: s.narUrl() });
    expect(res.statusCode).toBe(200);
    expect(Number(res.headers['content-length'])).toBe(s.fixture.narSize);
    expect(res.rawPayload.length).toBe(0);
    expect(narRequests(s.pi)).toHaveLength(0);
    // The proxy is alive and serves the NAR afterwards.
    expect((await s.app.inject({ method: 'GET', url: s.narUrl() })).rawPayload.equals(s.fixture.nar)).toBe(true);
  });

  it('after a restart (nothing cached) the NAR URL alone is enough: origins are asked for the narinfo', async () => {
    s = await scenario();
    await s.narinfo();
    const url = s.narUrl();
    await s.close();
    s = await scenario();
    // A fresh proxy for another fixture cannot serve this one: no origin has it.
    const res = await s.app.inject({ method: 'GET', url });
    expect(res.statusCode).toBe(404);
  });

  it('the narinfo for another NarHash: 404, nothing streamed', async () => {
    s = await scenario();
    await s.narinfo();
    const wrong = s.narUrl().replace(/-[0-9a-z]{52}\.nar$/, `-${'1'.repeat(52)}.nar`);
    const res = await s.app.inject({ method: 'GET', url: wrong });
    expect(res.statusCode).toBe(404);
    expect(narRequests(s.pi)).toHaveLength(0);
  });
});

describe('a NAR request with Range', () => {
  const cases = [
    ['offset 0', (_size: number) => 0],
    ['inside the first chunk', (_size: number) => 100],
    ['in the middle', (size: number) => Math.floor(size / 2) + 7],
    ['the last byte', (size: number) => size - 1],
  ] as const;
  it.each(cases)('bytes=N- at %s: 206, Content-Range, exactly the NAR from N', async (_what, at) => {
    s = await scenario();
    await s.narinfo();
    const start = at(s.fixture.narSize);
    const res = await s.app.inject({ method: 'GET', url: s.narUrl(), headers: { range: `bytes=${start}-` } });
    expect(res.statusCode).toBe(206);
    expect(res.headers['content-range']).toBe(`bytes ${start}-${s.fixture.narSize - 1}/${s.fixture.narSize}`);
    expect(Number(res.headers['content-length'])).toBe(s.fixture.narSize - start);
    expect(res.rawPayload.equals(s.fixture.nar.subarray(start))).toBe(true);
    // The origin's file is read from byte 0 (it is compressed): no Range is forwarded.
    expect(narRequests(s.pi).every((r) => r.range === undefined)).toBe(true);
  });

  it('bytes=N-M inside the NAR: exactly those bytes; an end past the NAR is clamped', async () => {
    s = await scenario();
    await s.narinfo();
    const size = s.fixture.narSize;
    const a = await s.app.inject({ method: 'GET', url: s.narUrl(), headers: { range: 'bytes=10-20' } });
    expect(a.statusCode).toBe(206);
    expect(a.headers['content-range']).toBe(`bytes 10-20/${size}`);
    expect(a.rawPayload.equals(s.fixture.nar.subarray(10, 21))).toBe(true);
    const b = await s.app.inject({ method: 'GET', url: s.narUrl(), headers: { range: `bytes=${size - 5}-${size + 100}` } });
    expect(b.headers['content-range']).toBe(`bytes ${size - 5}-${size - 1}/${size}`);
    expect(b.rawPayload.equals(s.fixture.nar.subarray(size - 5))).toBe(true);
  });

  it('a Range at or past the end: 416 with Content-Range: bytes */SIZE, for GET and HEAD', async () => {
    s = await scenario();
    await s.narinfo();
    const size = s.fixture.narSize;
    for (const method of ['GET', 'HEAD'] as const) {
      for (const start of [size, size + 1000]) {
        const res = await s.app.inject({ method, url: s.narUrl(), headers: { range: `bytes=${start}-` } });
        expect(res.statusCode).toBe(416);
        expect(res.headers['content-range']).toBe(`bytes */${size}`);
      }
    }
    expect(narRequests(s.pi)).toHaveLength(0);
  });

  it('a Range the proxy cannot parse is ignored: the whole NAR, 200', async () => {
    s = await scenario();
    await s.narinfo();
    for (const range of ['bytes=5-3', 'bytes=0-1,5-6', 'lines=1-2', 'bytes=-100']) {
      const res = await s.app.inject({ method: 'GET', url: s.narUrl(), headers: { range } });
      expect(res.statusCode, range).toBe(200);
      expect(res.rawPayload.equals(s.fixture.nar)).toBe(true);
    }
  });

  it('HEAD with a Range: 206 with the range\'s length, no body', async () => {
    s = await scenario();
    await s.narinfo();
    const res = await s.app.inject({ method: 'HEAD', url: s.narUrl(), headers: { range: 'bytes=100-' } });
    expect(res.statusCode).toBe(206);
    expect(Number(res.headers['content-length'])).toBe(s.fixture.narSize - 100);
    expect(res.rawPayload.length).toBe(0);
  });

  it('NAR bytes are counted as delivered to Nix, not as read from the origin', async () => {
    s = await scenario();
    await s.narinfo();
    const res = await s.app.inject({ method: 'GET', url: s.narUrl(), headers: { range: `bytes=${s.fixture.narSize - 1000}-` } });
    expect(res.rawPayload.length).toBe(1000);
    expect(s.stats.state.total.origins.pi!.nar.bytes).toBe(1000);
  });
});

describe('origins that answer badly before the first byte: the next origin serves, Nix notices nothing', () => {
  it.each([
    ['404', behave.status(404)],
    ['500', behave.status(500, 'oops')],
    ['a captive portal (200 with HTML)', behave.html()],
    ['a redirect to a portal', behave.redirect('http://127.0.0.1:9/login')],
    ['headers and then silence', behave.silent()],
  ])('the Pi answers the NAR with %s', async (_what, behaviour) => {
    s = await scenario({ lanTimeouts: { firstByteMs: 1500, bodyIdleMs: 1500 } });
    await s.narinfo();
    s.pi.nar(behaviour);
    const res = await s.app.inject({ method: 'GET', url: s.narUrl() });
    expect(res.statusCode).toBe(200);
    expect(res.rawPayload.equals(s.fixture.nar)).toBe(true);
    expect(narRequests(s.upstream)).toHaveLength(1);
  });

  it('the Pi is gone (connection refused)', async () => {
    s = await scenario();
    await s.narinfo();
    await s.pi.server.close();
    const res = await s.app.inject({ method: 'GET', url: s.narUrl() });
    expect(res.statusCode).toBe(200);
    expect(res.rawPayload.equals(s.fixture.nar)).toBe(true);
  });

  it('every origin lost its NAR file (404): 404, so Nix does not retry in vain', async () => {
    s = await scenario();
    await s.narinfo();
    s.pi.nar(behave.status(404));
    s.upstream.nar(behave.status(404));
    const res = await s.app.inject({ method: 'GET', url: s.narUrl() });
    expect(res.statusCode).toBe(404);
    expect(res.json()).toMatchObject({ error: 'NOT_IN_ANY_ORIGIN' });
  });

  it('no origin can serve it: 503 with a JSON error, never a partial NAR', async () => {
    s = await scenario({ noUpstream: true });
    await s.narinfo();
    s.pi.nar(behave.status(500));
    const res = await s.app.inject({ method: 'GET', url: s.narUrl() });
    expect(res.statusCode).toBe(503);
    expect(res.json()).toMatchObject({ error: 'ORIGINS_UNAVAILABLE' });
  });
});
