import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { household, type Household } from '../helpers/scenario.js';
import { startProxy, type ProxyProcess } from '../helpers/proxy.js';
import { stopAll } from '../helpers/proc.js';

const LEAVES = Array.from({ length: 8 }, (_, i) => ({ name: `leaf${i}`, size: 3000 + i }));

describe('narinfo and NAR prefetch with real Nix 2.8', () => {
  let h: Household;
  let proxy: ProxyProcess;

  beforeAll(async () => {
    h = await household('i15-prefetch', LEAVES);
    proxy = await startProxy(['--no-mdns', '--lan', h.pi.url, '--upstream', h.upstream.url, ...h.trustedKeys.flatMap((k) => ['--trusted-public-key', k])]);
  });
  afterAll(async () => {
    await proxy?.stop();
    await stopAll();
    await h?.cleanup();
  });

  it("Nix asks for the root: the leaves' narinfos are fetched from the Pi once, ahead of Nix, and Nix's own requests for them are answered without asking the Pi again", async () => {
    const res = await h.fetch(proxy.url);
    expect(res.code, res.stderr).toBe(0);
    expect(h.closure.paths.every((p) => existsSync(join(res.store, p)))).toBe(true);

    const hashOf = (p: string) => p.slice('/nix/store/'.length, '/nix/store/'.length + 32);
    const leaves = h.closure.paths.filter((p) => p !== h.closure.root).map(hashOf);
    const piNarinfos = (await h.pi.log()).filter((e) => e.uri.endsWith('.narinfo'));
    for (const leaf of leaves) expect(piNarinfos.filter((e) => e.uri === `/${leaf}.narinfo`)).toHaveLength(1);
    expect(piNarinfos).toHaveLength(h.closure.paths.length); // no request twice, nothing else
    expect((await h.upstream.log()).filter((e) => e.uri.endsWith('.narinfo'))).toHaveLength(0);

    const stats = (await (await fetch(`${proxy.url}/_/stats`)).json()) as {
      narinfoPrefetch: { lookups: number; used: number; dropped: number };
      periods: { sinceInstall: { client: { narinfoFound: number } } };
    };
    // Every leaf was prefetched and then asked for by Nix (from memory, or joining the prefetch on its way).
    expect(stats.narinfoPrefetch).toEqual({ lookups: leaves.length, used: leaves.length, dropped: 0 });
    // Client counters count what Nix asked, not the prefetches.
    expect(stats.periods.sinceInstall.client.narinfoFound).toBeGreaterThanOrEqual(h.closure.paths.length);
  });

  it('every NAR Nix fetched was fetched from the Pi once, ahead of Nix, and handed to Nix from the proxy (memory, or the fetch on its way)', async () => {
    const res = await h.fetch(proxy.url);
    expect(res.code, res.stderr).toBe(0);
    expect(h.closure.paths.every((p) => existsSync(join(res.store, p)))).toBe(true);
    const stats = (await (await fetch(`${proxy.url}/_/stats`)).json()) as { narPrefetch: { started: number; used: number; wasted: number } };
    const health = (await (await fetch(`${proxy.url}/_/health`)).json()) as { narPrefetch: { reservedBytes: number; held: number } };
    // Two fetches of the closure by now (this one and the one above): every path's NAR each time.
    const paths = h.closure.paths.length;
    expect(stats.narPrefetch.used).toBe(2 * paths);
    expect(stats.narPrefetch.started).toBe(2 * paths);
    expect(stats.narPrefetch.wasted).toBe(0);
    const piNars = (await h.pi.log()).filter((e) => e.uri.startsWith('/nar/'));
    expect(piNars).toHaveLength(2 * paths);
    expect(new Set(piNars.map((e) => e.uri)).size).toBe(paths);
    expect((await h.upstream.log()).filter((e) => e.uri.startsWith('/nar/'))).toHaveLength(0);
    // The stats count what Nix got, per origin, as nginx saw it: one request and the NAR's bytes per path.
    const s = (await (await fetch(`${proxy.url}/_/stats`)).json()) as { periods: { sinceInstall: { origins: Record<string, { nar: { requests: number } }> } } };
    expect(s.periods.sinceInstall.origins[new URL(h.pi.url).host]!.nar.requests).toBe(piNars.length);
    // Nothing left in memory once Nix has them all.
    expect(health.narPrefetch).toMatchObject({ reservedBytes: 0, held: 0 });
  });
});
