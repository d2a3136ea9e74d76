import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NIX_CLIENTS } from '../helpers/nix-clients.js';
import { household, type Household } from '../helpers/scenario.js';
import { startProxy } from '../helpers/proxy.js';
import { stopAll } from '../helpers/proc.js';

const LEAVES = Array.from({ length: 12 }, (_, i) => ({ name: `leaf${i}`, size: 4000 + 97 * i }));

/**
 * Issue 23: whatever the client's parallelism (2.8: one path at a time; 2.26
 * and 2.34: up to 16 at once), each path costs the Pi one narinfo request
 * (so one signature check) and one NAR request (so one decode and one
 * NarHash check), however the proxy's look-ahead and Nix's own requests
 * meet; and nothing is left held once Nix has the closure.
 */
describe.each(NIX_CLIENTS)('with $name: each narinfo and each NAR fetched from the Pi once', (client) => {
  let h: Household;
  beforeAll(async () => {
    h = await household(`i23-once-${client.suite}`, LEAVES);
  });
  afterAll(async () => {
    await stopAll();
    await h?.cleanup();
  });

  it('Nix realises the closure through a fresh proxy: one narinfo and one NAR request per path at the Pi, none upstream, nothing held after', async () => {
    const proxy = await startProxy(['--no-mdns', '--lan', h.pi.url, '--upstream', h.upstream.url, ...h.trustedKeys.flatMap((k) => ['--trusted-public-key', k])]);
    try {
      const piBefore = (await h.pi.log()).length;
      const res = await h.fetch(proxy.url, { client });
      expect(res.code, res.stderr).toBe(0);
      expect(h.closure.paths.every((p) => existsSync(join(res.store, p)))).toBe(true);
      const pi = (await h.pi.log()).slice(piBefore);
      const narinfos = pi.filter((e) => e.uri.endsWith('.narinfo')).map((e) => e.uri);
      const nars = pi.filter((e) => e.uri.startsWith('/nar/')).map((e) => e.uri);
      const paths = h.closure.paths.length;
      expect(narinfos).toHaveLength(paths);
      expect(new Set(narinfos).size).toBe(paths);
      expect(nars).toHaveLength(paths);
      expect(new Set(nars).size).toBe(paths);
      expect((await h.upstream.log()).filter((e) => e.uri.endsWith('.narinfo') || e.uri.startsWith('/nar/'))).toHaveLength(0);
      const health = (await (await fetch(`${proxy.url}/_/health`)).json()) as { narPrefetch: { reservedBytes: number; held: number; running: number } };
      expect(health.narPrefetch).toMatchObject({ reservedBytes: 0, held: 0, running: 0 });
    } finally {
      await proxy.stop();
    }
  });
});
