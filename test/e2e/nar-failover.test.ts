import { existsSync } from 'node:fs';
import { cp } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { household, type Household } from '../helpers/scenario.js';
import { startProxy, type ProxyProcess } from '../helpers/proxy.js';
import { freePort } from '../helpers/ports.js';
import { Nginx } from '../helpers/nginx.js';
import { nixEnv } from '../helpers/nix.js';
import { runOk, stopAll } from '../helpers/proc.js';

// One NAR large enough that, at the Pi's throttled rate, a cut lands in the middle of it.
const LEAVES = [
  { name: 'big', size: 6_000_000 },
  ...Array.from({ length: 4 }, (_, i) => ({ name: `small${i}`, size: 30_000 })),
];

describe('NAR failover: Nix cached narinfos from the Pi, then the Pi went away', () => {
  let h: Household;
  const proxies: ProxyProcess[] = [];

  beforeAll(async () => {
    h = await household('failover', LEAVES, { piLimitRate: '2m' });
  });
  afterAll(async () => {
    await Promise.all(proxies.map((p) => p.stop()));
    await stopAll();
    await h?.cleanup();
  });

  const keys = () => ['--trusted-public-key', h.piKey.publicKey, '--trusted-public-key', h.upstreamKey.publicKey];
  async function proxy(port: number, lan: string[] = [h.pi.url]): Promise<ProxyProcess> {
    const p = await startProxy(['--no-mdns', ...lan.flatMap((u) => ['--lan', u]), '--upstream', h.upstream.url, ...keys(), '--listen', `127.0.0.1:${port}`]);
    proxies.push(p);
    return p;
  }
  /** Nix looks up every narinfo of the closure through the proxy and caches them, without fetching NARs. */
  async function warmNixNarinfoCache(proxyUrl: string, xdgCache: string): Promise<void> {
    const out = await runOk('nix', ['path-info', '-r', '--store', proxyUrl, h.closure.root, '--option', 'trusted-public-keys', h.trustedKeys.join(' ')], {
      env: nixEnv({ XDG_CACHE_HOME: xdgCache }),
    });
    expect(out.trim().split('\n')).toHaveLength(h.closure.paths.length);
  }
  const arrived = (store: string) => h.closure.paths.every((p) => existsSync(join(store, p)));

  it('the Pi is gone and the proxy restarted: every NAR arrives from the zstd upstream in place of the xz Pi', async () => {
    const port = await freePort();
    const xdg = join(h.dir, 'xdg-restart');
    const first = await proxy(port);
    await warmNixNarinfoCache(first.url, xdg);
    await first.stop();
    await h.pi.stop();
    try {
      const second = await proxy(port);
      const upstreamBefore = (await h.upstream.narHits()).length;
      const res = await h.fetch(second.url, { xdgCache: xdg });
      expect(res.code, res.stderr).toBe(0);
      expect(arrived(res.store)).toBe(true);
      // Nix asked for the Pi's NAR URLs (from its cache), and got upstream's zstd files.
      const upstreamNars = (await h.upstream.narHits()).slice(upstreamBefore);
      expect(upstreamNars).toHaveLength(h.closure.paths.length);
      expect(upstreamNars.every((e) => e.uri.endsWith('.nar.zst'))).toBe(true);
      expect(second.logs.some((l) => l.msg === 'NAR failover')).toBe(true);
    } finally {
      await h.pi.start();
    }
  });

  it('the Pi dies in the middle of a large NAR and a second LAN cache holds the identical file: the stream resumes there, Nix never notices', async () => {
    const mirrorDir = join(h.dir, 'mirror-cache');
    await cp(h.piDir, mirrorDir, { recursive: true });
    const mirror = await Nginx.start({ root: mirrorDir, workDir: join(h.dir, 'mirror-nginx-work') });
    try {
      const p = await proxy(await freePort(), [h.pi.url, mirror.url]);
      const xdg = join(h.dir, 'xdg-resume');
      await warmNixNarinfoCache(p.url, xdg);
      const fetching = h.fetch(p.url, { xdgCache: xdg });
      // Throttled to 2 MB/s, the 6 MB NAR takes ~3 s: cut the Pi after 1 s.
      await new Promise((r) => setTimeout(r, 1000));
      await h.pi.stop();
      const res = await fetching;
      expect(res.code, res.stderr).toBe(0);
      expect(arrived(res.store)).toBe(true);
      const resumed = (await mirror.log()).filter((e) => e.uri.startsWith('/nar/') && e.status === 206);
      expect(resumed.length).toBeGreaterThanOrEqual(1);
      expect(res.stderr).not.toMatch(/retrying/);
    } finally {
      await mirror.stop();
      await h.pi.start();
    }
  });

  it('the Pi dies in the middle of a large NAR and only the zstd upstream is left: Nix never gets a short NAR, and the path arrives from upstream', async () => {
    const p = await proxy(await freePort());
    const xdg = join(h.dir, 'xdg-midstream');
    await warmNixNarinfoCache(p.url, xdg);
    const upstreamBefore = (await h.upstream.narHits()).length;
    const fetching = h.fetch(p.url, { xdgCache: xdg, timeoutMs: 60_000 });
    await new Promise((r) => setTimeout(r, 1000));
    await h.pi.stop();
    try {
      let res = await fetching;
      // The proxy aborts the cut stream, so curl reports a partial transfer and Nix
      // retries with a Range request. No origin holds those bytes (upstream's file is
      // zstd), so the proxy refuses the range with a 503 rather than splice two files:
      // that attempt fails cleanly, and the next one is served from upstream.
      if (res.code !== 0) {
        expect(res.stderr).toMatch(/Transferred a partial file/);
        expect(res.stderr).toMatch(/503/);
        expect(res.stderr).not.toMatch(/hash mismatch|NAR hash/i);
        res = await h.fetch(p.url, { xdgCache: xdg, store: res.store });
      }
      expect(res.code, res.stderr).toBe(0);
      expect(arrived(res.store)).toBe(true);
      const big = h.closure.paths.find((x) => x.endsWith('-big'))!;
      expect(existsSync(join(res.store, big))).toBe(true);
      expect((await h.upstream.narHits()).length).toBeGreaterThan(upstreamBefore);
      expect(p.logs.some((l) => typeof l.msg === 'string' && l.msg.startsWith('NAR interrupted'))).toBe(true);
    } finally {
      await h.pi.start();
    }
  });
});
