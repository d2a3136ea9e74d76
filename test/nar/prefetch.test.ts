import { afterEach, describe, expect, it } from 'vitest';
import type { NarPrefetchOptions } from '../../src/nar/nar-prefetch.js';
import type { OriginTimeouts } from '../../src/origins/timeouts.js';
import { behave, type Behaviour } from '../helpers/fake-cache.js';
import { compress, type NarFixture } from '../helpers/nar-fixtures.js';
import { until } from '../helpers/wait.js';
import { fetchNar, house as makeHouse, type House } from './harness.js';

/** The LAN timeouts of these scenarios: a first-byte (5 s) and body-idle timeout (3 s) no test reaches by accident. */
const LAN: Partial<OriginTimeouts> = { firstByteMs: 5000, bodyIdleMs: 3000 };

/** `count` paths of `size` bytes behind the proxy (test/nar/harness.ts), NAR prefetch with these options (off when undefined). */
const house = (count: number, size: number, narPrefetch: Partial<NarPrefetchOptions> | undefined, { lan, lanNarHeadMs }: { lanNarHeadMs?: number; lan?: Partial<OriginTimeouts> } = {}) =>
  makeHouse({ count, size, lanTimeouts: { ...LAN, ...lan }, ...(narPrefetch ? { narPrefetch } : {}), ...(lanNarHeadMs !== undefined ? { lanNarHeadMs } : {}) });

/** Nix asks for a path's narinfo; returns the NAR URL it was handed. */
async function nixAsks(h: House, f: NarFixture): Promise<string> {
  return `/${/^URL: (.*)$/m.exec(await h.narinfo(f))![1]!}`;
}

/** Nothing fetched ahead is still running or waiting. */
const settled = (h: House) => until('NAR prefetches to settle', 10_000, async () => {
  const p = (await h.health()).narPrefetch;
  return p.running === 0 && p.queued === 0 && p;
});

let h: House | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

describe('NAR prefetch: what Nix asked a narinfo for, it gets from memory', () => {
  it('Nix asks for a narinfo: the NAR is fetched before Nix asks for it, and served from memory (the Pi is not asked again)', async () => {
    h = await house(1, 300_000, {});
    const [p] = h.paths as [NarFixture];
    const url = await nixAsks(h, p);
    await until('the NAR fetched ahead', 5000, () => h!.pi.narRequests(p) === 1 && h!.stats.state.narPrefetch.started === 1);
    expect((await settled(h)).held).toBe(1);
    // The Pi now fails every NAR request: only memory can serve it.
    h.pi.nar(p, behave.status(500));
    const res = await h.app.inject({ method: 'GET', url });
    expect(res.statusCode).toBe(200);
    expect(res.rawPayload.equals(p.nar)).toBe(true);
    expect(h.pi.narRequests(p)).toBe(1);
    expect(h.upstream.narRequests(p)).toBe(0);
    expect(h.stats.state.narPrefetch).toMatchObject({ started: 1, used: 1, wasted: 0 });
    // Stats count the bytes Nix got, from the origin that sent them.
    expect(h.stats.state.total.origins.pi!.nar.bytes).toBe(p.narSize);
    // Handed out once: memory is freed when the response ends.
    expect((await h.health()).narPrefetch).toMatchObject({ reservedBytes: 0, held: 0 });
  });

  it('Nix asks while the NAR is still arriving: it gets the bytes as they come, from the one fetch', async () => {
    h = await house(1, 400_000, {});
    const [p] = h.paths as [NarFixture];
    h.pi.nar(p, behave.drip(16_384, 5, 16_384));
    const url = await nixAsks(h, p);
    await until('the fetch ahead under way', 5000, () => h!.pi.narRequests(p) === 1);
    const base = await h.app.listen({ host: '127.0.0.1', port: 0 });
    const res = await fetchNar(base, url);
    expect(res.error).toBeUndefined();
    expect(res.body.equals(p.nar)).toBe(true);
    expect(h.pi.narRequests(p)).toBe(1);
    expect(h.stats.state.narPrefetch).toMatchObject({ started: 1, used: 1 });
  });

  it('the byte budget holds under a closure larger than it: never more reserved than the budget, every NAR right, each fetched once', async () => {
    const size = 100_000;
    h = await house(20, size, { budgetBytes: 3.5 * (size + 200), concurrency: 8 });
    // The Pi holds every NAR request until let go, so fetches ahead pile up if nothing bounds them.
    const held: Array<() => void> = [];
    let open = 0;
    let maxOpen = 0;
    const gate: Behaviour = (req, res, body) =>
      new Promise<void>((resolve) => {
        open++;
        maxOpen = Math.max(maxOpen, open);
        res.once('close', () => open--);
        held.push(() => {
          behave.ok()(req, res, body);
          resolve();
        });
      });
    for (const p of h.paths) h.pi.nar(p, gate);
    const urls = new Map<string, string>();
    for (const p of h.paths) urls.set(p.storeHash, await nixAsks(h, p));
    await until('three fetches ahead waiting at the Pi', 5000, () => open === 3);
    const status = (await h.health()).narPrefetch;
    expect(status.running).toBe(3);
    expect(status.queued).toBe(17);
    expect(status.reservedBytes).toBeLessThanOrEqual(status.budgetBytes);
    // Let the Pi answer from now on; Nix fetches the NARs deepest first (the reverse of its narinfo walk).
    for (const p of h.paths) h.pi.nar(p, behave.ok());
    held.splice(0).forEach((go) => go());
    let maxReserved = 0;
    for (const p of [...h.paths].reverse()) {
      const res = await h.app.inject({ method: 'GET', url: urls.get(p.storeHash)! });
      expect(res.statusCode).toBe(200);
      expect(res.rawPayload.equals(p.nar)).toBe(true);
      const s = (await h.health()).narPrefetch;
      maxReserved = Math.max(maxReserved, s.reservedBytes);
      expect(s.reservedBytes).toBeLessThanOrEqual(s.budgetBytes);
    }
    expect(maxOpen).toBeLessThanOrEqual(3);
    expect(maxReserved).toBeLessThanOrEqual(3.5 * (size + 200));
    for (const p of h.paths) expect(h.pi.narRequests(p)).toBe(1);
    expect(h.stats.state.narPrefetch.used).toBeGreaterThan(0);
    expect((await settled(h)).reservedBytes).toBe(0);
  });

  it('a NAR larger than the whole budget is not fetched ahead (counted as skipped); Nix still gets it', async () => {
    h = await house(1, 300_000, { budgetBytes: 100_000 });
    const [p] = h.paths as [NarFixture];
    const url = await nixAsks(h, p);
    expect(h.stats.state.narPrefetch).toMatchObject({ started: 0, skipped: 1 });
    expect(h.pi.narRequests(p)).toBe(0);
    const res = await h.app.inject({ method: 'GET', url });
    expect(res.rawPayload.equals(p.nar)).toBe(true);
    expect(h.pi.narRequests(p)).toBe(1);
  });

  it('a NAR Nix never comes for is dropped after the idle time: counted as wasted, its memory freed', async () => {
    h = await house(1, 200_000, { idleMs: 300 });
    const [p] = h.paths as [NarFixture];
    const url = await nixAsks(h, p);
    await until('the NAR dropped unused', 5000, () => h!.stats.state.narPrefetch.wasted === 1);
    expect(h.stats.state.narPrefetch.wastedBytes).toBe(p.narSize);
    expect((await h.health()).narPrefetch).toMatchObject({ reservedBytes: 0, held: 0 });
    // Nix comes after all: fetched again, and right.
    const res = await h.app.inject({ method: 'GET', url });
    expect(res.rawPayload.equals(p.nar)).toBe(true);
    expect(h.pi.narRequests(p)).toBe(2);
  });

  it('a NAR fetched ahead from upstream while the Pi was away is dropped as soon as Nix gets that NAR from the Pi, not held until the idle time', async () => {
    h = await house(1, 200_000, {});
    const [p] = h.paths as [NarFixture];
    const pi = h.origins.ordered()[0]!;
    pi.reportFailure('test: the Pi is away'); // circuit open: the narinfo (and the NAR fetched ahead) come from upstream
    await nixAsks(h, p);
    await until('the NAR fetched ahead from upstream', 5000, () => h!.upstream.narRequests(p) === 1 && h!.stats.state.narPrefetch.started === 1);
    (pi.breaker as unknown as { success(): void }).success(); // the Pi is back: answers found meanwhile are forgotten
    const url = await nixAsks(h, p); // from the Pi now, and fetched ahead from it
    const res = await h.app.inject({ method: 'GET', url });
    expect(res.rawPayload.equals(p.nar)).toBe(true);
    expect(h.stats.state.total.origins.pi!.nar.bytes).toBe(p.narSize);
    // Upstream's copy was of no more use: dropped at once, counted as wasted, nothing held.
    expect(h.stats.state.narPrefetch).toMatchObject({ wasted: 1, wastedBytes: p.narSize });
    expect((await settled(h)).held).toBe(0);
  });

  it('off (budget 0): nothing is fetched before Nix asks', async () => {
    h = await house(1, 100_000, undefined);
    const [p] = h.paths as [NarFixture];
    const url = await nixAsks(h, p);
    expect((await h.health()).narPrefetch).toEqual({ budgetBytes: 0, reservedBytes: 0, running: 0, queued: 0, held: 0 });
    expect(h.pi.narRequests(p)).toBe(0);
    expect((await h.app.inject({ method: 'GET', url })).rawPayload.equals(p.nar)).toBe(true);
  });

  it('a HEAD on a narinfo fetches nothing ahead', async () => {
    h = await house(1, 100_000, {});
    const [p] = h.paths as [NarFixture];
    const res = await h.app.inject({ method: 'HEAD', url: `/${p.storeHash}.narinfo` });
    expect(res.statusCode).toBe(200);
    expect(h.stats.state.narPrefetch.started).toBe(0);
    expect(h.pi.narRequests(p)).toBe(0);
  });
});

describe('NAR prefetch: what goes wrong ahead of Nix never reaches Nix', () => {
  it("the Pi holds a corrupt copy: the prefetched bytes are checked like any, the response never completes wrong, the copy is quarantined and Nix's retry gets upstream's", async () => {
    // 600 kB, half random: its xz file is larger than the small-file size, so a different FileSize does not stop it early.
    h = await house(1, 600_000, {});
    const [p] = h.paths as [NarFixture];
    const bad = Buffer.from(p.nar);
    bad[200_000] = bad[200_000]! ^ 0xff;
    h.pi.nar(p, behave.ok(), compress(bad, 'xz'));
    const url = await nixAsks(h, p);
    // Fetched and decoded ahead without complaint: only the hash can tell.
    expect((await settled(h)).held).toBe(1);
    const base = await h.app.listen({ host: '127.0.0.1', port: 0 });
    // The flipped byte went out before the hash could tell: the response is aborted, never completed wrong (Nix retries).
    const first = await fetchNar(base, url);
    expect(first.error).toBeDefined();
    expect(first.body.length).toBeLessThan(p.narSize);
    expect(h.stats.state.narPrefetch.used).toBe(1);
    expect(h.quarantine.has(h.origins.ordered()[0]!.id, p.storeHash)).toBe(true);
    // Nix's retry: the quarantined copy is skipped, upstream serves it.
    const again = await fetchNar(base, url);
    expect(again.error).toBeUndefined();
    expect(again.body.equals(p.nar)).toBe(true);
    expect(h.pi.narRequests(p)).toBe(1);
  });

  it('the Pi resets half-way through a NAR fetched ahead while Nix reads it: the response goes on from upstream at the same offset', async () => {
    h = await house(1, 2_000_000, {});
    const [p] = h.paths as [NarFixture];
    h.pi.nar(p, behave.resetAfter(300_000), compress(p.nar, 'none'));
    // The Pi's narinfo says xz; the file it sends is cut: a decode or transport failure either way.
    const url = await nixAsks(h, p);
    const base = await h.app.listen({ host: '127.0.0.1', port: 0 });
    const res = await fetchNar(base, url);
    expect(res.error).toBeUndefined();
    expect(res.body.equals(p.nar)).toBe(true);
    expect(h.upstream.narRequests(p)).toBe(1);
    expect(h.logs.some((l) => l.msg === 'NAR failover')).toBe(true);
  });

  it('a fetch ahead that fails before Nix comes is dropped: Nix gets the NAR from the Pi anew', async () => {
    h = await house(1, 200_000, {});
    const [p] = h.paths as [NarFixture];
    h.pi.nar(p, behave.status(503));
    const url = await nixAsks(h, p);
    await until('the failed fetch dropped', 5000, async () => h!.stats.state.narPrefetch.started === 1 && (await h!.health()).narPrefetch.held === 0);
    h.pi.nar(p, behave.ok());
    const res = await h.app.inject({ method: 'GET', url });
    expect(res.rawPayload.equals(p.nar)).toBe(true);
    expect(h.stats.state.narPrefetch.used).toBe(0);
  });

  it('Nix hangs up in the middle of a NAR served from memory: the budget is freed, nothing left open at the Pi', async () => {
    h = await house(1, 3_000_000, {});
    const [p] = h.paths as [NarFixture];
    const url = await nixAsks(h, p);
    await settled(h);
    const base = await h.app.listen({ host: '127.0.0.1', port: 0 });
    const { request } = await import('undici');
    const res = await request(new URL(url, base));
    let got = 0;
    for await (const chunk of res.body) {
      got += (chunk as Buffer).length;
      if (got > 100_000) break; // leaving the loop destroys the body: the client hangs up
    }
    await until('the budget freed', 5000, async () => (await h!.health()).narPrefetch.reservedBytes === 0);
    expect(h.pi.server.open()).toBe(0);
    // The proxy serves the next request normally.
    expect((await h.app.inject({ method: 'GET', url })).rawPayload.equals(p.nar)).toBe(true);
  });
});

describe('leaving home: a Pi that accepts NAR requests and never answers costs the LAN head deadline, not its timeout', () => {
  it.each([
    ['with NAR prefetch', {}],
    ['without', undefined],
  ] as const)('%s: the NAR comes from upstream, the Pi is marked slow, its circuit untouched', async (_what, prefetch) => {
    h = await house(1, 200_000, prefetch, { lanNarHeadMs: 200 });
    const [p] = h.paths as [NarFixture];
    const url = await nixAsks(h, p);
    // The laptop leaves: the Pi still accepts connections, and answers nothing.
    h.pi.nar(p, behave.silent());
    const res = await h.app.inject({ method: 'GET', url });
    expect(res.statusCode).toBe(200);
    expect(res.rawPayload.equals(p.nar)).toBe(true);
    expect(h.upstream.narRequests(p)).toBe(1);
    expect(h.logs.some((l) => l.msg === 'NAR transfer from origin stalled or too slow; going on from the next origin' && String(l.reason).includes('no response head within 200 ms'))).toBe(true);
    // Well before the Pi's first-byte timeout (5 s): its circuit did not trip; its request was given up.
    expect(h.origins.ordered()[0]!.breaker.isOpen).toBe(false);
    await until('the request to the Pi given up', 5000, () => h!.pi.server.open() === 0);
  });

  it('a Pi that answers within the deadline serves the NAR as always', async () => {
    h = await house(1, 200_000, undefined, { lanNarHeadMs: 200 });
    const [p] = h.paths as [NarFixture];
    const url = await nixAsks(h, p);
    const res = await h.app.inject({ method: 'GET', url });
    expect(res.rawPayload.equals(p.nar)).toBe(true);
    expect(h.pi.narRequests(p)).toBe(1);
    expect(h.upstream.narRequests(p)).toBe(0);
  });
});

describe('small xz NARs are decoded on their own threads', () => {
  it('a Pi that stalls in the middle of one small NAR holds up no other NAR', async () => {
    // The stall is never detected in this test (a minute of body-idle): anything that waits on it waits past the test.
    h = await house(2, 100_000, undefined, { lan: { bodyIdleMs: 60_000 } });
    const [a, b] = h.paths as [NarFixture, NarFixture];
    h.pi.nar(a, behave.stallAfter(1000));
    const urlA = await nixAsks(h, a);
    const urlB = await nixAsks(h, b);
    let aDone = false;
    const stalled = h.app.inject({ method: 'GET', url: urlA }).then(
      () => (aDone = true),
      () => (aDone = true),
    );
    await until('the stalled request at the Pi', 5000, () => h!.pi.narRequests(a) === 1);
    const res = await h.app.inject({ method: 'GET', url: urlB });
    expect(res.rawPayload.equals(b.nar)).toBe(true);
    expect(aDone).toBe(false);
    await h.pi.server.close(); // the Pi goes away: the stalled one goes on from upstream
    await stalled;
  });
});
