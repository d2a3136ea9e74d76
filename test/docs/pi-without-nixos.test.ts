import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildClosure, generateKey, removeDir, substitute, tempDir, type CacheKey, type Closure } from '../helpers/nix.js';
import { writePushTempFiles, startServerBlock } from '../helpers/pi-server-block.js';
import { freePort } from '../helpers/ports.js';
import { run, stopAll } from '../helpers/proc.js';
import { NIX_CLIENTS } from '../helpers/nix-clients.js';
import { CLI, startProxy, type ProxyProcess } from '../helpers/proxy.js';

const DOC = new URL('../../docs/pi.md', import.meta.url);

/** The nginx server block docs/pi.md gives for a Pi without NixOS, exactly as written. */
async function docServerBlock(): Promise<string> {
  const text = await readFile(DOC, 'utf8');
  const section = text.slice(text.indexOf('## Without NixOS'));
  const block = /```nginx\n([\s\S]*?)```/.exec(section)?.[1];
  if (!block) throw new Error('docs/pi.md has no nginx block under "Without NixOS"');
  return block;
}

describe('docs/pi.md, followed as written on a Pi without NixOS', () => {
  let dir: string;
  let key: CacheKey;
  let closure: Closure;

  beforeAll(async () => {
    dir = await tempDir('docs-pi');
    key = await generateKey(dir, 'pi.lan-1');
    closure = await buildClosure(`docs-pi-${process.pid}`, [{ name: 'a', size: 20_000 }, { name: 'b', size: 30_000 }]);
  });
  afterAll(async () => {
    await stopAll();
    await removeDir(dir);
  });

  describe("the doc's nginx server block, serving a cache filled by `push`, behind the proxy", () => {
    let cache: string;
    let port: number;
    let nginx: Awaited<ReturnType<typeof startServerBlock>>;
    let proxy: ProxyProcess;
    const pi = () => `http://127.0.0.1:${port}/`;

    beforeAll(async () => {
      cache = join(dir, 'srv-nix-cache');
      const pushed = await run(process.execPath, [CLI, 'push', '--to', cache, '--key-file', key.secretFile, '--root', 'laptop', closure.root], { timeoutMs: 120_000 });
      expect(pushed.code, pushed.stderr).toBe(0);

      // The block as written, with the port and root of this test and nothing else changed.
      port = await freePort();
      const block = (await docServerBlock())
        .replace(/listen 8080; listen \[::\]:8080;/, `listen 127.0.0.1:${port};`)
        .replace('root /srv/nix-cache;', `root ${cache};`);
      expect(block).toContain(`listen 127.0.0.1:${port};`);
      expect(block).toContain(`root ${cache};`);
      nginx = await startServerBlock(block, join(dir, 'nginx'), port);
      proxy = await startProxy(['--no-mdns', '--lan', pi(), '--upstream', `http://127.0.0.1:${await freePort()}/`, '--trusted-public-key', key.publicKey]);
    });
    afterAll(async () => {
      await proxy?.stop();
      await nginx?.stop();
    });

    it('answers nix-cache-info as a cache, and 404 for the roots push keeps', async () => {
      const info = await fetch(`${pi()}nix-cache-info`);
      expect(info.headers.get('content-type')).toBe('text/x-nix-cache-info');
      expect((await fetch(`${pi()}roots/laptop`)).status).toBe(404);
    });

    for (const client of NIX_CLIENTS) {
      it(`${client.name} substitutes it through the proxy, every NAR from nginx`, async () => {
        const before = ((await readFile(nginx.accessLog, 'utf8')).match(/GET \/nar\/\S+ HTTP\/1\.1" 200/g) ?? []).length;
        const store = join(dir, `client-${client.suite}`);
        const res = await substitute(store, [closure.root], proxy.url, { client, xdgCache: join(dir, `xdg-${client.suite}`), trustedKeys: [key.publicKey] });
        expect(res.code, res.stderr).toBe(0);
        expect(closure.paths.every((p) => existsSync(join(store, p)))).toBe(true);
        const after = ((await readFile(nginx.accessLog, 'utf8')).match(/GET \/nar\/\S+ HTTP\/1\.1" 200/g) ?? []).length;
        expect(after - before).toBe(closure.paths.length);
      });
    }

    it("never serves push's temporary files: a push half-way", async () => {
      for (const p of await writePushTempFiles(cache)) {
        expect((await fetch(`${pi()}${p}`)).status, p).toBe(404);
      }
    });
  });
});
