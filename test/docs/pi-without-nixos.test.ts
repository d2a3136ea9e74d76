import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildClosure, generateKey, removeDir, substitute, tempDir, type CacheKey, type Closure } from '../helpers/nix.js';
import { freePort, waitForPort } from '../helpers/ports.js';
import { run, startProcess, stopAll, stopProcess } from '../helpers/proc.js';
import { CLI, startProxy } from '../helpers/proxy.js';

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

  it("the doc's nginx server block serves a cache filled by `push`; real Nix substitutes it through the proxy", async () => {
    const cache = join(dir, 'srv-nix-cache');
    const pushed = await run(process.execPath, [CLI, 'push', '--to', cache, '--key-file', key.secretFile, '--root', 'laptop', closure.root], { timeoutMs: 120_000 });
    expect(pushed.code, pushed.stderr).toBe(0);

    // The block as written, with the port and root of this test and nothing else changed.
    const port = await freePort();
    const block = (await docServerBlock())
      .replace(/listen 8080; listen \[::\]:8080;/, `listen 127.0.0.1:${port};`)
      .replace('root /srv/nix-cache;', `root ${cache};`);
    expect(block).toContain(`listen 127.0.0.1:${port};`);
    expect(block).toContain(`root ${cache};`);
    const work = join(dir, 'nginx');
    await mkdir(join(work, 'tmp'), { recursive: true });
    await writeFile(
      join(work, 'nginx.conf'),
      `user root; worker_processes 1; pid ${work}/nginx.pid; error_log ${work}/error.log warn;
events { worker_connections 64; }
http {
  include /etc/nginx/mime.types;
  access_log ${work}/access.log;
  client_body_temp_path ${work}/tmp; proxy_temp_path ${work}/tmp; fastcgi_temp_path ${work}/tmp; uwsgi_temp_path ${work}/tmp; scgi_temp_path ${work}/tmp;
${block}
}
`,
    );
    const nginx = startProcess('nginx', ['-c', join(work, 'nginx.conf'), '-p', work, '-g', 'daemon off;'], { stdio: 'ignore' });
    try {
      await waitForPort(port);
      const pi = `http://127.0.0.1:${port}/`;
      const info = await fetch(`${pi}nix-cache-info`);
      expect(info.headers.get('content-type')).toBe('text/x-nix-cache-info');
      expect((await fetch(`${pi}roots/laptop`)).status).toBe(404);

      const proxy = await startProxy(['--no-mdns', '--lan', pi, '--upstream', `http://127.0.0.1:${await freePort()}/`, '--trusted-public-key', key.publicKey]);
      const store = join(dir, 'client');
      const res = await substitute(store, [closure.root], proxy.url, { xdgCache: join(dir, 'xdg'), trustedKeys: [key.publicKey] });
      expect(res.code, res.stderr).toBe(0);
      expect(closure.paths.every((p) => existsSync(join(store, p)))).toBe(true);
      const log = await readFile(join(work, 'access.log'), 'utf8');
      expect(log.match(/GET \/nar\/\S+ HTTP\/1\.1" 200/g)).toHaveLength(closure.paths.length);
      await proxy.stop();
    } finally {
      await stopProcess(nginx);
    }
  });
});
