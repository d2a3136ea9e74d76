import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { LINKS, startLink } from '../helpers/link.js';
import { NIX_CLIENTS } from '../helpers/nix-clients.js';
import { substitute } from '../helpers/nix.js';
import { piHome, type PiHome } from '../helpers/pi-home.js';
import { stopAll } from '../helpers/proc.js';

/**
 * A home link, not only loopback (issue 22): the Pi (real nginx, xz) behind a
 * relay with Wi-Fi's or Gigabit Ethernet's latency and one rate shared by all
 * connections, an upstream (nginx, zstd) on loopback that has every path too
 * and answers faster than the Pi ever can. Real Nix of each version
 * substitutes a 301-path closure through the proxy: the command succeeds,
 * and while the Pi answers nothing comes from upstream. Nix 2.26 and 2.34 ask
 * for 16 NARs at once and the proxy fetches more ahead: a NAR's response
 * head waits behind the others' bytes on the one wire, and the laptop runs
 * the proxy late when it is busy; neither may be taken for a Pi gone quiet
 * (docs/architecture.md, "A busy laptop, a busy link").
 */
const PROFILES = ['wifi', 'gigabit'] as const;

interface Snapshot {
  periods: { sinceInstall: { origins: Record<string, { nar: { requests: number; errors: number } }>; client: { narinfoFromLan: number; narinfoFromUpstream: number }; failovers: number } };
  recentFallbacks: unknown[];
}

describe('a home link: real Nix substitutes a 301-path closure through the proxy, the Pi behind Wi-Fi or Gigabit', () => {
  let home: PiHome;
  let n = 0;

  // 301 paths of 100 kB of text (xz gets it to ~75%), three levels under the root: a small system's worth of paths.
  beforeAll(async () => void (home = await piHome('home', { levels: 3, width: 100, fanout: 3, bytes: 100_000 })), 600_000);
  afterAll(async () => {
    await stopAll();
    await home?.cleanup();
  });

  describe.each(PROFILES)('over %s', (profile) => {
    it.each(NIX_CLIENTS)('$name: the command succeeds and every NAR comes from the Pi, none from upstream', async (client) => {
      const { closure, pi, upstream } = home;
      const link = await startLink({ target: { host: '127.0.0.1', port: pi.port }, ...LINKS[profile] });
      onTestFinished(() => link.close());
      const proxy = await home.proxyBehind(link);
      onTestFinished(() => proxy.stop());
      const piSeen = (await pi.log()).length;
      const upSeen = (await upstream.log()).length;

      const store = join(home.dir, `store-${++n}`);
      const res = await substitute(store, [closure.root], proxy.url, { client, xdgCache: join(home.dir, `xdg-${n}`), trustedKeys: home.trustedKeys, timeoutMs: 180_000, wrapper: home.laptop });
      expect(res.code, res.stderr.slice(-3000)).toBe(0);
      expect(closure.paths.filter((p) => !existsSync(join(store, p)))).toEqual([]);

      const upstreamNars = (await upstream.log()).slice(upSeen).filter((e) => e.uri.startsWith('/nar/'));
      const piNars = new Set((await pi.log()).slice(piSeen).filter((e) => e.uri.startsWith('/nar/') && e.method === 'GET' && e.status === 200).map((e) => e.uri));
      const s = (await (await fetch(`${proxy.url}/_/stats`)).json()) as Snapshot;
      const p = s.periods.sinceInstall;
      const of = (url: string) => p.origins[new URL(url).host]?.nar ?? { requests: 0, errors: 0 };
      // What the proxy said when it left the Pi (failover, slow marks, circuit changes), for the failure message.
      const why = JSON.stringify(proxy.logs.filter((l) => Number(l.level) >= 40 || l.event === 'origin-state' || l.event === 'origin-back').slice(0, 8));
      console.log(
        `${client.name} over ${profile}: ${closure.paths.length} paths in ${(res.ms / 1000).toFixed(1)} s; ${(link.bytesDown() / 2 ** 20).toFixed(1)} MiB over the link in ${link.connections()} connections; ` +
          `NARs to Nix from the Pi ${of(link.url).requests}, from upstream ${of(upstream.url).requests}; narinfos to Nix from the Pi ${p.client.narinfoFromLan}, from upstream ${p.client.narinfoFromUpstream}; ` +
          `upstream's nginx saw ${upstreamNars.length} NAR requests`,
      );
      // Nothing fell back: upstream's nginx was asked for no NAR at all (not even ahead of Nix), every narinfo Nix
      // got came from the Pi, every NAR Nix got was the Pi's, and the Pi's nginx served each NAR file.
      expect(upstreamNars.length, why).toBe(0);
      expect(p.client.narinfoFromUpstream, JSON.stringify(s.recentFallbacks.slice(0, 3))).toBe(0);
      expect(p.client.narinfoFromLan).toBe(closure.paths.length);
      expect(of(upstream.url).requests).toBe(0);
      expect(of(link.url)).toMatchObject({ requests: closure.paths.length, errors: 0 });
      expect(p.failovers).toBe(0);
      expect(piNars.size).toBe(closure.paths.length);
    }, 240_000);
  });
});
