import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkCache } from '../helpers/cache.js';
import { Nginx } from '../helpers/nginx.js';
import { buildClosure, generateKey, makeStaticCache, removeDir, substitute, tempDir, type CacheKey, type Closure } from '../helpers/nix.js';
import { startFill } from '../helpers/pi-fill.js';
import { onLoopback, startServerBlock, writePushTempFiles } from '../helpers/pi-server-block.js';
import { freePort } from '../helpers/ports.js';
import { NIX_CLIENTS } from '../helpers/nix-clients.js';
import { stopAll } from '../helpers/proc.js';
import { until } from '../helpers/wait.js';
import { evalExpr, evalOk } from './nix-eval.js';

/** The nginx `server` block NixOS writes for the Pi module with fill on (test/nix/fixtures/render-nginx.nix). */
const renderedServer = (fillPort: number) =>
  evalOk<string>(
    evalExpr(
      { modules: ['pi'], machine: `{ services.nix-lan-cache.pi = { enable = true; keyName = "pi.lan-1"; fill = { enable = true; port = ${fillPort}; }; }; }` },
      'nginxServers',
    ),
  );

describe("the Pi module's nginx with fill on, run with real nginx and a real fill service", () => {
  let dir: string;
  let upKey: CacheKey;
  let closure: Closure;
  let upstream: Nginx;

  beforeAll(async () => {
    dir = await tempDir('pi-fill-nginx');
    upKey = await generateKey(dir, 'upstream-1');
    closure = await buildClosure(`pi-fill-nginx-${process.pid}`, [{ name: 'a', size: 20_000 }, { name: 'b', size: 300_000 }]);
    await makeStaticCache(join(dir, 'upstream'), closure.paths, upKey);
    upstream = await Nginx.start({ root: join(dir, 'upstream'), workDir: join(dir, 'nginx-upstream') });
  });
  afterAll(async () => {
    await stopAll();
    await removeDir(dir);
  });

  // Each Nix against a Pi with an empty cache of its own, so that each gets the paths streamed by fill.
  for (const client of NIX_CLIENTS) it(`${client.name}: a path only upstream has reaches it through the Pi, lands in the cache, and the cache still hides temporary files`, async () => {
    const cache = join(dir, `nix-cache-${client.suite}`);
    await mkdir(cache);
    const fillPort = await freePort();
    const port = await freePort();
    const block = onLoopback(await renderedServer(fillPort), port, cache);
    expect(block).toContain('try_files $uri @fill;');
    expect(block).toContain(`proxy_pass http://127.0.0.1:${fillPort};`);
    const fill = await startFill(['--cache', cache, '--upstream', upstream.url, '--trusted-public-key', upKey.publicKey], fillPort);
    const nginx = await startServerBlock(block, join(dir, `nginx-pi-${client.suite}`), port);
    try {
      const pi = `http://127.0.0.1:${port}/`;
      const laptop = join(dir, `laptop-${client.suite}`);
      const res = await substitute(laptop, [closure.root], pi, { client, xdgCache: join(dir, `xdg-${client.suite}`), trustedKeys: [upKey.publicKey] });
      expect(res.code, res.stderr).toBe(0);
      expect(closure.paths.every((p) => existsSync(join(laptop, p)))).toBe(true);
      // Everything is filled into the cache (fill publishes a path once its NAR is checked and its references are in,
      // which may be just after Nix got the bytes), NAR before narinfo, and the cache is valid at every step.
      const filled = await until('every path published', 15_000, async () => {
        const c = await checkCache(cache);
        expect(c.problems).toEqual([]);
        return c.narinfos.size === closure.paths.length && c;
      });
      expect(filled.narinfos.size).toBe(closure.paths.length);
      // With fill's try_files in place, files a push or a fill is still writing are 404, never passed to fill or served.
      const temps = await writePushTempFiles(cache);
      for (const p of temps) expect((await fetch(`${pi}${p}`)).status, p).toBe(404);
      // A second laptop is served from the cache by nginx alone: fill is stopped.
      await fill.stop();
      const again = await substitute(join(dir, `laptop-2-${client.suite}`), [closure.root], pi, { client, xdgCache: join(dir, `xdg-2-${client.suite}`), trustedKeys: [upKey.publicKey] });
      expect(again.code, again.stderr).toBe(0);
    } finally {
      await nginx.stop();
    }
  });
});
