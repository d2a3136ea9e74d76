import { afterEach, describe, expect, it } from 'vitest';
import { behave } from '../helpers/fake-cache.js';
import { compress } from '../helpers/nar-fixtures.js';
import { fetchNar, scenario, type Scenario } from './harness.js';

let s: Scenario | undefined;
afterEach(async () => {
  await s?.close();
  s = undefined;
});

const narRequests = (side: Scenario['pi']) => side.server.requests.filter((r) => r.url === side.url);
const logged = (sc: Scenario, msg: string | RegExp) => sc.logs.filter((l) => typeof l.msg === 'string' && (typeof msg === 'string' ? l.msg === msg : msg.test(l.msg)));

/** The Pi's file with one byte flipped at `at` (same size). */
function flipped(file: Buffer, at: number): Buffer {
  const copy = Buffer.from(file);
  copy[at] = copy[at]! ^ 0xff;
  return copy;
}

describe('the Pi fails after its first byte: the proxy goes on from upstream at the same offset, Nix notices nothing', () => {
  const SIZE = 2_000_000;
  it.each([
    ['resets the connection half-way', () => behave.resetAfter(600_000)],
    ['stalls half-way (past the body-idle timeout)', () => behave.stallAfter(600_000)],
  ])('the Pi %s', async (_what, behaviour) => {
    s = await scenario({ size: SIZE, piCompression: 'none' });
    await s.narinfo();
    s.pi.nar(behaviour());
    const base = await s.listen();
    const res = await fetchNar(base, s.narUrl());
    expect(res.error).toBeUndefined();
    expect(res.status).toBe(200);
    expect(res.body.equals(s.fixture.nar)).toBe(true);
    expect(narRequests(s.upstream)).toHaveLength(1);
    expect(logged(s, 'NAR failover')).toHaveLength(1);
    expect(s.stats.state.total.failovers).toEqual({ pi: { upstream: 1 } });
  });

  it('the Pi\'s xz file is truncated and served with its (correct) Content-Length: not a short NAR, the rest from upstream, and the copy quarantined', async () => {
    s = await scenario({ size: SIZE });
    await s.narinfo();
    s.pi.nar(behave.ok(), s.pi.file.subarray(0, Math.floor(s.pi.file.length * 0.6)));
    const res = await fetchNar(await s.listen(), s.narUrl());
    expect(res.error).toBeUndefined();
    expect(res.body.equals(s.fixture.nar)).toBe(true);
    expect(s.quarantine.has(s.origins.ordered()[0]!.id, s.fixture.storeHash)).toBe(true);
  });

  it('a Range request, and the Pi resets: the range completes from upstream', async () => {
    s = await scenario({ size: SIZE, piCompression: 'zstd', upstreamCompression: 'xz' });
    await s.narinfo();
    s.pi.nar(behave.resetAfter(300_000));
    const start = 1_234_567;
    const res = await fetchNar(await s.listen(), s.narUrl(), { range: `bytes=${start}-` });
    expect(res.error).toBeUndefined();
    expect(res.status).toBe(206);
    expect(res.body.equals(s.fixture.nar.subarray(start))).toBe(true);
  });

  it('every origin fails half-way: the response is aborted, never ended short', async () => {
    s = await scenario({ size: SIZE, piCompression: 'none' });
    await s.narinfo();
    s.pi.nar(behave.resetAfter(600_000));
    s.upstream.nar(behave.resetAfter(900_000));
    const res = await fetchNar(await s.listen(), s.narUrl());
    expect(res.error).toBeDefined();
    expect(res.body.length).toBeLessThan(s.fixture.narSize);
    expect(logged(s, /^NAR interrupted/)).toHaveLength(1);
  });
});

describe('the Pi breaks off a NAR only it has (a path built at home): its circuit opens, and the resume still goes to it', () => {
  const SIZE = 2_000_000;
  async function breakOnce(sc: Scenario) {
    sc.pi.nar(behave.firstThen(behave.resetAfter(600_000), behave.ok()));
    sc.upstream.nar(behave.status(404));
    await sc.narinfo();
    const base = await sc.listen();
    const cut = await fetchNar(base, sc.narUrl());
    expect(cut.error).toBeDefined(); // nowhere to go on from: aborted, as Nix must see it
    expect(sc.origins.ordered()[0]!.breaker.isOpen).toBe(true);
    return { base, cut };
  }

  it("Nix's resume (Range from where the break left it) is asked of the Pi although its circuit is open: 206, the NAR whole, the circuit closed", async () => {
    s = await scenario({ size: SIZE, piCompression: 'none' });
    const { base, cut } = await breakOnce(s);
    const rest = await fetchNar(base, s.narUrl(), { range: `bytes=${cut.body.length}-` });
    expect(rest.error).toBeUndefined();
    expect(rest.status).toBe(206);
    expect(Buffer.concat([cut.body, rest.body]).equals(s.fixture.nar)).toBe(true);
    expect(s.origins.ordered()[0]!.breaker.isOpen).toBe(false);
  });

  it('the Pi then gone for good: the resume is answered 503 at once, never waited on', async () => {
    s = await scenario({ size: SIZE, piCompression: 'none' });
    const { base, cut } = await breakOnce(s);
    await s.pi.server.close(); // refused from now on
    const started = performance.now();
    const rest = await fetchNar(base, s.narUrl(), { range: `bytes=${cut.body.length}-` });
    expect(rest.status).toBe(503);
    expect(performance.now() - started).toBeLessThan(1000);
  });
});

describe('a small xz NAR only the Pi has (read whole, not streamed): an open circuit is still asked, last', () => {
  it('the Pi breaks off the file once and its circuit opens: Nix\'s retry gets the NAR from it, whole', async () => {
    s = await scenario({ size: 40_000 }); // xz on the Pi, well under the read-whole size
    s.pi.nar(behave.firstThen(behave.resetAfter(Math.floor(s.pi.file.length / 2)), behave.ok()));
    s.upstream.nar(behave.status(404));
    await s.narinfo();
    const base = await s.listen();
    const first = await fetchNar(base, s.narUrl());
    expect(first.status).toBe(503); // nothing was sent: a status Nix retries
    expect(s.origins.ordered()[0]!.breaker.isOpen).toBe(true);
    const retry = await fetchNar(base, s.narUrl());
    expect(retry.error).toBeUndefined();
    expect(retry.status).toBe(200);
    expect(retry.body.equals(s.fixture.nar)).toBe(true);
    expect(narRequests(s.pi)).toHaveLength(2); // the break, then the whole file through the open circuit
  });
});

describe('corrupt files on the Pi: verified in stream, quarantined, the next attempt comes from upstream', () => {
  it('one byte flipped near the end of a same-size NAR (in the held-back bytes): Nix gets the right NAR at once', async () => {
    s = await scenario({ size: 200_000, piCompression: 'none' });
    await s.narinfo();
    s.pi.nar(behave.ok(), flipped(s.pi.file, s.pi.file.length - 10));
    const res = await fetchNar(await s.listen(), s.narUrl());
    expect(res.error).toBeUndefined();
    expect(res.body.equals(s.fixture.nar)).toBe(true);
    expect(s.stats.state.total.origins.pi!.nar.quarantined).toBe(1);
  });

  it('one byte flipped early in a same-size NAR: that response is aborted before its last bytes; the next attempt succeeds from upstream', async () => {
    s = await scenario({ size: 2_000_000, piCompression: 'none' });
    await s.narinfo();
    s.pi.nar(behave.ok(), flipped(s.pi.file, 1000));
    const base = await s.listen();
    const first = await fetchNar(base, s.narUrl());
    expect(first.error).toBeDefined();
    expect(first.body.length).toBeLessThan(s.fixture.narSize);
    const q = s.logs.find((l) => l.event === 'nar-quarantine');
    expect(q).toMatchObject({ origin: 'pi', storeHash: s.fixture.storeHash, failure: 'content' });
    expect(String(q!.reason)).toMatch(/NarHash says/);
    expect(s.stats.state.fallbacks.find((f) => f.what === 'quarantine')).toMatchObject({ from: 'pi', storeHash: s.fixture.storeHash });
    const piBefore = narRequests(s.pi).length;
    const second = await fetchNar(base, s.narUrl());
    expect(second.error).toBeUndefined();
    expect(second.body.equals(s.fixture.nar)).toBe(true);
    expect(narRequests(s.pi)).toHaveLength(piBefore); // quarantined: not asked again
  });

  it('a xz file with a flipped byte (decompression fails): the rest comes from upstream, or the response aborts; never a complete wrong NAR', async () => {
    s = await scenario({ size: 1_000_000 });
    await s.narinfo();
    s.pi.nar(behave.ok(), flipped(s.pi.file, Math.floor(s.pi.file.length / 2)));
    const res = await fetchNar(await s.listen(), s.narUrl());
    if (res.error === undefined) expect(res.body.equals(s.fixture.nar)).toBe(true);
    else expect(res.body.length).toBeLessThan(s.fixture.narSize);
    expect(s.stats.state.total.origins.pi!.nar.quarantined).toBe(1);
  });
});

describe('a LAN cache that rewrites unsigned narinfo fields', () => {
  it('Compression: ../../x: that origin cannot serve it; upstream does', async () => {
    s = await scenario({ piNarinfo: { compression: '../../x' } });
    expect(await s.narinfo()).toMatch(/^Compression: none$/m);
    const res = await s.app.inject({ method: 'GET', url: s.narUrl() });
    expect(res.statusCode).toBe(200);
    expect(res.rawPayload.equals(s.fixture.nar)).toBe(true);
    expect(narRequests(s.pi)).toHaveLength(0);
  });

  it('Compression: none over an xz file: the xz bytes never reach Nix; upstream serves, the copy is quarantined', async () => {
    s = await scenario({ piNarinfo: { compression: 'none' } });
    await s.narinfo();
    const res = await s.app.inject({ method: 'GET', url: s.narUrl() });
    expect(res.statusCode).toBe(200);
    expect(res.rawPayload.equals(s.fixture.nar)).toBe(true);
    expect(s.quarantine.list()).toMatchObject([{ origin: 'pi', storeHash: s.fixture.storeHash }]);
  });

  it('Compression: xz over an uncompressed file: decompression fails, upstream serves', async () => {
    s = await scenario({ piCompression: 'none', piNarinfo: { compression: 'xz' } });
    await s.narinfo();
    const res = await s.app.inject({ method: 'GET', url: s.narUrl() });
    expect(res.rawPayload.equals(s.fixture.nar)).toBe(true);
  });

  it('Compression: bzip2 over a zstd file, URL pointing elsewhere under the cache: never wrong bytes', async () => {
    s = await scenario({ piNarinfo: { compression: 'bzip2', url: 'nix-cache-info' } });
    await s.narinfo();
    const res = await s.app.inject({ method: 'GET', url: s.narUrl() });
    expect(res.rawPayload.equals(s.fixture.nar)).toBe(true);
  });
});

describe('a Pi far slower than upstream is left for upstream at the same offset', () => {
  const slowRule = { minBytesPerSecond: 100_000, windowMs: 1000 };
  it.each([
    ['drips 1 KiB every 200 ms (never idle long enough for the body timeout)', () => behave.drip(1024, 200, 64 * 1024)],
    ['sends 10 KB/s', () => behave.drip(1000, 100, 64 * 1024)],
  ])('the Pi %s', async (_what, behaviour) => {
    s = await scenario({ size: 1_000_000, piCompression: 'none', slowRule });
    await s.narinfo();
    s.pi.nar(behaviour());
    const base = await s.listen();
    const res = await fetchNar(base, s.narUrl());
    expect(res.error).toBeUndefined();
    expect(res.body.equals(s.fixture.nar)).toBe(true);
    expect(logged(s, /too slow/)).toHaveLength(1);
    // Left for a while: the next NAR goes to upstream first.
    const again = await fetchNar(base, s.narUrl());
    expect(again.body.equals(s.fixture.nar)).toBe(true);
    expect(narRequests(s.pi)).toHaveLength(1);
  });

  it('a slow Pi with no other origin is not left: slow beats failing', async () => {
    s = await scenario({ size: 120_000, piCompression: 'none', slowRule, noUpstream: true });
    await s.narinfo();
    s.pi.nar(behave.drip(20_000, 300, 0));
    const res = await fetchNar(await s.listen(), s.narUrl());
    expect(res.error).toBeUndefined();
    expect(res.body.equals(s.fixture.nar)).toBe(true);
  });
});

describe('compressions other than the Pi\'s', () => {
  it.each(['xz', 'zstd', 'bzip2'] as const)('upstream stores %s and the Pi fails half-way through its xz file', async (c) => {
    s = await scenario({ size: 800_000, upstreamCompression: c });
    await s.narinfo();
    expect(s.upstream.file.equals(compress(s.fixture.nar, c))).toBe(true);
    s.pi.nar(behave.resetAfter(Math.floor(s.pi.file.length / 2)));
    const res = await fetchNar(await s.listen(), s.narUrl());
    expect(res.error).toBeUndefined();
    expect(res.body.equals(s.fixture.nar)).toBe(true);
  });
});

describe('small xz files (decoded in process, not by a spawned xz)', () => {
  it('a small xz NAR is served exactly, with no xz process', async () => {
    s = await scenario({ size: 20_000 });
    await s.narinfo();
    expect(s.pi.file.length).toBeLessThan(256 * 1024);
    const res = await s.app.inject({ method: 'GET', url: s.narUrl() });
    expect(res.rawPayload.equals(s.fixture.nar)).toBe(true);
    expect(narRequests(s.upstream)).toHaveLength(0);
  });

  it.each([
    ['truncated', (f: Buffer) => f.subarray(0, Math.floor(f.length / 2))],
    ['with a flipped byte', (f: Buffer) => flipped(f, Math.floor(f.length / 2))],
    ['garbage', (f: Buffer) => Buffer.alloc(f.length, 7)],
  ])('a small xz file %s: upstream serves, the copy is quarantined', async (_what, spoil) => {
    s = await scenario({ size: 20_000 });
    await s.narinfo();
    s.pi.nar(behave.ok(), spoil(s.pi.file));
    const res = await s.app.inject({ method: 'GET', url: s.narUrl() });
    expect(res.statusCode).toBe(200);
    expect(res.rawPayload.equals(s.fixture.nar)).toBe(true);
    expect(s.stats.state.total.origins.pi!.nar.quarantined).toBe(1);
  });

  it('a small FileSize over a large file: decoding stops at FileSize, never buffers the rest; upstream serves', async () => {
    s = await scenario({ size: 2_000_000, piNarinfo: { fileSize: 1000 } });
    await s.narinfo();
    const res = await s.app.inject({ method: 'GET', url: s.narUrl() });
    expect(res.rawPayload.equals(s.fixture.nar)).toBe(true);
    expect(s.quarantine.list()).toHaveLength(1);
  });
});
