import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { household, type Household } from '../helpers/scenario.js';
import { startProxy, type ProxyProcess } from '../helpers/proxy.js';
import { blackhole, freePort } from '../helpers/ports.js';
import { stopAll } from '../helpers/proc.js';
import { NIX_CLIENTS } from '../helpers/nix-clients.js';

const LEAVES = Array.from({ length: 6 }, (_, i) => ({ name: `leaf${i}`, size: 40_000 + i * 1000 }));

function arrived(h: Household, store: string): boolean {
  return h.closure.paths.every((p) => existsSync(join(store, p)));
}

describe('routing between the Pi and upstream, with real Nix and real nginx', () => {
  let h: Household;
  const proxies: ProxyProcess[] = [];

  beforeAll(async () => {
    h = await household('routing', LEAVES);
  });
  afterAll(async () => {
    await Promise.all(proxies.map((p) => p.stop()));
    await stopAll();
    await h?.cleanup();
  });

  async function proxyWithPi(piUrl: string): Promise<ProxyProcess> {
    const p = await startProxy(['--no-mdns', '--lan', piUrl, '--upstream', h.upstream.url, '--trusted-public-key', h.piKey.publicKey, '--trusted-public-key', h.upstreamKey.publicKey]);
    proxies.push(p);
    return p;
  }

  for (const client of NIX_CLIENTS) describe(client.name, () => {
    it('Pi up: every NAR comes from the Pi, none from upstream', async () => {
      const proxy = await proxyWithPi(h.pi.url);
      const before = (await h.upstream.narHits()).length;
      const piBefore = (await h.pi.narHits()).length;
      const res = await h.fetch(proxy.url, { client });
      expect(res.code, res.stderr).toBe(0);
      expect(arrived(h, res.store)).toBe(true);
      const piNars = (await h.pi.narHits()).slice(piBefore);
      expect(new Set(piNars.map((e) => e.uri)).size).toBe(h.closure.paths.length);
      expect((await h.upstream.narHits()).length).toBe(before);
    });

    it('laptop away from home: Pi refused, Pi blackholed: the closure comes from upstream at most 2 s slower than with the Pi up', async () => {
      const piUp = await proxyWithPi(h.pi.url);
      const baseline = await h.fetch(piUp.url, { client });
      expect(baseline.code, baseline.stderr).toBe(0);

      const refusedPort = await freePort(); // nothing listens there
      const refused = await proxyWithPi(`http://127.0.0.1:${refusedPort}/`);
      const hole = await blackhole();
      const hung = await proxyWithPi(hole.url);
      try {
        for (const proxy of [refused, hung]) {
          const upstreamBefore = (await h.upstream.narHits()).length;
          const res = await h.fetch(proxy.url, { client, timeoutMs: 60_000 });
          expect(res.code, res.stderr).toBe(0);
          expect(arrived(h, res.store)).toBe(true);
          expect((await h.upstream.narHits()).length - upstreamBefore).toBe(h.closure.paths.length);
          expect(res.ms - baseline.ms).toBeLessThan(2000);
        }
      } finally {
        await hole.close();
      }
    });

    it('a narinfo signed by an untrusted key on the Pi: the path comes from upstream, and the refusal is logged', async () => {
      // The proxy trusts the upstream key but not the Pi's.
      const proxy = await startProxy(['--no-mdns', '--lan', h.pi.url, '--upstream', h.upstream.url, '--trusted-public-key', h.upstreamKey.publicKey]);
      proxies.push(proxy);
      const piBefore = (await h.pi.narHits()).length;
      const upstreamBefore = (await h.upstream.narHits()).length;
      const res = await h.fetch(proxy.url, { client });
      expect(res.code, res.stderr).toBe(0);
      expect(arrived(h, res.store)).toBe(true);
      expect((await h.pi.narHits()).length).toBe(piBefore);
      expect((await h.upstream.narHits()).length - upstreamBefore).toBe(h.closure.paths.length);
      expect(proxy.logs.some((l) => l.event === 'untrusted-narinfo')).toBe(true);
    });
  });
});
