import { afterEach, describe, expect, it } from 'vitest';
import { behave } from '../helpers/fake-cache.js';
import { fetchNar, house, scenario, type House, type Scenario } from './harness.js';

let s: Scenario | undefined;
let h: House | undefined;
afterEach(async () => {
  await s?.close();
  await h?.close();
  s = h = undefined;
});

const SIZE = 2_000_000;
const narRequests = (side: Scenario['pi']) => side.server.requests.filter((r) => r.url === side.url).length;
const failovers = (sc: Scenario) => sc.logs.filter((l) => l.msg === 'NAR failover');

/** The Pi's file with one byte flipped at `at` (same size). */
function flipped(file: Buffer, at: number): Buffer {
  const copy = Buffer.from(file);
  copy[at] = copy[at]! ^ 0xff;
  return copy;
}

/**
 * Another machine's share (a peer: uncompressed NARs, as shares serve them)
 * in the Pi's place, with the upstream behind it: every way it can fail a
 * NAR, the proxy treats it as it treats a Pi, and Nix gets the right bytes.
 */
describe('a peer that goes away, stalls, crawls or lies mid-NAR is left as a Pi is', () => {
  it.each([
    ['goes away half-way (connection reset)', () => behave.resetAfter(700_000)],
    ['stalls half-way (past the body-idle timeout)', () => behave.stallAfter(700_000)],
  ])('the peer %s: the NAR goes on from upstream at the same byte', async (_what, behaviour) => {
    s = await scenario({ size: SIZE, piKind: 'peer', piCompression: 'none' });
    await s.narinfo();
    s.pi.nar(behaviour());
    const res = await fetchNar(await s.listen(), s.narUrl());
    expect(res.error).toBeUndefined();
    expect(res.body.equals(s.fixture.nar)).toBe(true);
    expect(failovers(s)).toHaveLength(1);
    expect(Number(failovers(s)[0]!.offset)).toBeGreaterThan(0);
    expect(s.stats.state.total.failovers).toEqual({ pi: { upstream: 1 } });
  });

  it('the peer sends nothing at all (no response head): given up at the head deadline, long before its first-byte timeout', async () => {
    h = await house({ size: SIZE, piKind: 'peer', piCompression: 'none', lanTimeouts: { firstByteMs: 20_000 }, lanNarHeadMs: 200 });
    const f = h.paths[0]!;
    const url = `/${/^URL: (.*)$/m.exec(await h.narinfo(f))![1]!}`;
    h.pi.nar(f, behave.silent());
    const started = Date.now();
    const res = await fetchNar(await h.listen(), url);
    expect(res.body.equals(f.nar)).toBe(true);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(h.upstream.narRequests(f)).toBe(1);
  });

  it('the peer crawls (under the slow rule): left for upstream, the rest from there', async () => {
    s = await scenario({ size: SIZE, piKind: 'peer', piCompression: 'none', slowRule: { minBytesPerSecond: 100_000, windowMs: 300 } });
    await s.narinfo();
    s.pi.nar(behave.drip(2048, 100, 100_000));
    const res = await fetchNar(await s.listen(), s.narUrl());
    expect(res.error).toBeUndefined();
    expect(res.body.equals(s.fixture.nar)).toBe(true);
    expect(failovers(s)).toHaveLength(1);
  });

  it('the peer lies (a NAR that is not the one its narinfo hashes to): never served; its copy quarantined, Nix gets the right NAR from upstream', async () => {
    s = await scenario({ size: SIZE, piKind: 'peer', piCompression: 'none' });
    await s.narinfo();
    s.pi.nar(behave.ok(), flipped(s.pi.file, SIZE - 10));
    const res = await fetchNar(await s.listen(), s.narUrl());
    expect(res.error).toBeUndefined();
    expect(res.body.equals(s.fixture.nar)).toBe(true);
    expect(s.quarantine.has(s.origins.ordered()[0]!.id, s.fixture.storeHash)).toBe(true);
  });
});
