import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { household, type Household } from '../helpers/scenario.js';
import { NIX_CLIENTS } from '../helpers/nix-clients.js';
import { startProxy, type ProxyProcess } from '../helpers/proxy.js';
import { stopAll } from '../helpers/proc.js';

const LEAVES = Array.from({ length: 8 }, (_, i) => ({ name: `leaf${i}`, size: 3000 + i }));

describe('narinfo and NAR prefetch with real Nix', () => {
  let h: Household;

  beforeAll(async () => {
    h = await household('i15-prefetch', LEAVES);
  });
  afterAll(async () => {
    await stopAll();
    await h?.cleanup();
  });

  // One proxy per Nix, started fresh: its counters, and the Pi's and upstream's logs from its start, are that Nix's alone.
  for (const client of NIX_CLIENTS) describe(client.name, () => {
    let proxy: ProxyProcess;
    let piMark = 0;
    let upstreamMark = 0;

    beforeAll(async () => {
      // About prefetch, not hedging: a Pi narinfo later than the default 200 ms on a loaded machine must not send lookups upstream.
      const config = join(h.dir, `no-early-hedge-${client.suite}.json`);
      await writeFile(config, JSON.stringify({ timeouts: { lan: { hedgeMs: 1000 } } }));
      proxy = await startProxy(['--no-mdns', '--config', config, '--lan', h.pi.url, '--upstream', h.upstream.url, ...h.trustedKeys.flatMap((k) => ['--trusted-public-key', k])]);
      piMark = (await h.pi.log()).length;
      upstreamMark = (await h.upstream.log()).length;
    });
    afterAll(async () => {
      await proxy?.stop();
    });
    const piLog = async () => (await h.pi.log()).slice(piMark);
    const upstreamLog = async () => (await h.upstream.log()).slice(upstreamMark);

    it("Nix asks for the root: the leaves' narinfos are fetched from the Pi once, ahead of Nix, and Nix's own requests for them are answered without asking the Pi again", async () => {
      const res = await h.fetch(proxy.url, { client });
      expect(res.code, res.stderr).toBe(0);
      expect(h.closure.paths.every((p) => existsSync(join(res.store, p)))).toBe(true);

      const hashOf = (p: string) => p.slice('/nix/store/'.length, '/nix/store/'.length + 32);
      const leaves = h.closure.paths.filter((p) => p !== h.closure.root).map(hashOf);
      const piNarinfos = (await piLog()).filter((e) => e.uri.endsWith('.narinfo'));
      for (const leaf of leaves) expect(piNarinfos.filter((e) => e.uri === `/${leaf}.narinfo`)).toHaveLength(1);
      expect(piNarinfos).toHaveLength(h.closure.paths.length); // no request twice, nothing else
      expect((await upstreamLog()).filter((e) => e.uri.endsWith('.narinfo'))).toHaveLength(0);

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
      const res = await h.fetch(proxy.url, { client });
      expect(res.code, res.stderr).toBe(0);
      expect(h.closure.paths.every((p) => existsSync(join(res.store, p)))).toBe(true);
      const stats = (await (await fetch(`${proxy.url}/_/stats`)).json()) as { narPrefetch: { started: number; used: number; wasted: number } };
      const health = (await (await fetch(`${proxy.url}/_/health`)).json()) as { narPrefetch: { reservedBytes: number; held: number } };
      // Two fetches of the closure by now (this one and the one above): every path's NAR each time.
      const paths = h.closure.paths.length;
      expect(stats.narPrefetch.used).toBe(2 * paths);
      expect(stats.narPrefetch.started).toBe(2 * paths);
      expect(stats.narPrefetch.wasted).toBe(0);
      const piNars = (await piLog()).filter((e) => e.uri.startsWith('/nar/'));
      expect(piNars).toHaveLength(2 * paths);
      expect(new Set(piNars.map((e) => e.uri)).size).toBe(paths);
      expect((await upstreamLog()).filter((e) => e.uri.startsWith('/nar/'))).toHaveLength(0);
      // The stats count what Nix got, per origin, as nginx saw it: one request and the NAR's bytes per path.
      const s = (await (await fetch(`${proxy.url}/_/stats`)).json()) as { periods: { sinceInstall: { origins: Record<string, { nar: { requests: number } }> } } };
      expect(s.periods.sinceInstall.origins[new URL(h.pi.url).host]!.nar.requests).toBe(piNars.length);
      // Nothing left in memory once Nix has them all.
      expect(health.narPrefetch).toMatchObject({ reservedBytes: 0, held: 0 });
    });
  });
});
