import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildClosure, generateKey, removeDir, substitute, tempDir, type CacheKey, type Closure } from '../helpers/nix.js';
import { onLoopback, startServerBlock, writePushTempFiles } from '../helpers/pi-server-block.js';
import { freePort } from '../helpers/ports.js';
import { run, stopAll } from '../helpers/proc.js';
import { NIX_CLIENTS } from '../helpers/nix-clients.js';
import { CLI } from '../helpers/proxy.js';
import { evalExpr, evalOk } from './nix-eval.js';

const piMachine = (extra = '') => `{
  services.nix-lan-cache.pi = { enable = true; keyName = "pi.lan-1"; };
  ${extra}
}`;

/** The nginx `server` block NixOS writes for nix/modules/pi.nix (test/nix/fixtures/render-nginx.nix). */
const renderedServer = (extra = '') => evalOk<string>(evalExpr({ modules: ['pi'], machine: piMachine(extra) }, 'nginxServers'));

describe("the Pi module's nginx, run with real nginx", () => {
  let dir: string;
  let key: CacheKey;
  let closure: Closure;
  let cache: string;

  beforeAll(async () => {
    dir = await tempDir('i12-pi-nginx');
    key = await generateKey(dir, 'pi.lan-1');
    closure = await buildClosure(`i12-pi-nginx-${process.pid}`, [{ name: 'a', size: 20_000 }, { name: 'b', size: 30_000 }]);
    cache = join(dir, 'nix-cache');
    const pushed = await run(process.execPath, [CLI, 'push', '--to', cache, '--key-file', key.secretFile, '--root', 'laptop', closure.root], { timeoutMs: 120_000 });
    if (pushed.code !== 0) throw new Error(`push failed: ${pushed.stderr}`);
  });
  afterAll(async () => {
    await stopAll();
    await removeDir(dir);
  });

  describe('the rendered block, run with real nginx', () => {
    let port: number;
    let nginx: Awaited<ReturnType<typeof startServerBlock>>;
    const pi = () => `http://127.0.0.1:${port}/`;

    beforeAll(async () => {
      port = await freePort();
      const block = onLoopback(await renderedServer(), port, cache);
      expect(block).toContain(`listen 127.0.0.1:${port} default_server;`);
      expect(block).toContain(`listen [::1]:${port} default_server;`);
      nginx = await startServerBlock(block, join(dir, 'nginx'), port);
    });
    afterAll(async () => {
      await nginx?.stop();
    });

    it('answers over IPv4 and IPv6: nix-cache-info as a cache, 404 for the roots push keeps', async () => {
      for (const base of [pi(), `http://[::1]:${port}/`]) {
        const info = await fetch(`${base}nix-cache-info`);
        expect(info.status).toBe(200);
        expect(info.headers.get('content-type')).toBe('text/x-nix-cache-info');
        expect((await fetch(`${base}roots/laptop`)).status).toBe(404);
      }
    });

    for (const client of NIX_CLIENTS) {
      it(`${client.name} substitutes the cache straight from it`, async () => {
        const store = join(dir, `client-${client.suite}`);
        const res = await substitute(store, [closure.root], pi(), { client, xdgCache: join(dir, `xdg-${client.suite}`), trustedKeys: [key.publicKey] });
        expect(res.code, res.stderr).toBe(0);
        expect(closure.paths.every((p) => existsSync(join(store, p)))).toBe(true);
      });
    }

    it('answers 404 for the files a push is still writing, GET and HEAD', async () => {
      const temps = await writePushTempFiles(cache);
      for (const p of temps) {
        const r = await fetch(`${pi()}${p}`);
        expect(r.status, p).toBe(404);
        expect((await fetch(`${pi()}${p}`, { method: 'HEAD' })).status, `HEAD ${p}`).toBe(404);
      }
    });
  });

  it('the 404s come from the dot-file rules: without them nginx would serve the same files', async () => {
    const port = await freePort();
    const rules = /location ~ \/\\\. \{\s*return 404;\s*\}/g;
    const block = onLoopback(await renderedServer(), port, cache);
    expect(block.match(rules)).toHaveLength(2);
    const nginx = await startServerBlock(block.replace(rules, ''), join(dir, 'nginx-without-rules'), port);
    try {
      const temps = await writePushTempFiles(cache);
      for (const p of temps) expect((await fetch(`http://127.0.0.1:${port}/${p}`)).status, p).toBe(200);
    } finally {
      await nginx.stop();
    }
  });

  it('listens on [::] only where IPv6 is on, as NixOS decides (networking.enableIPv6)', async () => {
    const withV6 = await evalOk(evalExpr({ modules: ['pi'], machine: piMachine() }, 'summary'));
    const listen = (s: any) => s.services.nginx.virtualHosts['nix-lan-cache'].listen.map((l: any) => `${l.addr}:${l.port}`);
    expect(listen(withV6)).toEqual(['0.0.0.0:8080', '[::]:8080']);
    const withoutV6 = await evalOk(evalExpr({ modules: ['pi'], machine: piMachine('networking.enableIPv6 = false;') }, 'summary'));
    expect(listen(withoutV6)).toEqual(['0.0.0.0:8080']);
    expect(await renderedServer('networking.enableIPv6 = false;')).not.toContain('[::]');
  });
});
