import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { normaliseBaseUrl, originId } from '../../src/origins/base-url.js';
import { parseNarInfo, serialiseNarInfo } from '../../src/protocol/narinfo.js';
import { formatLegacyNarUrl } from '../../src/protocol/narurl.js';
import { household, type Household } from '../helpers/scenario.js';
import { startProxy, type ProxyProcess } from '../helpers/proxy.js';
import { freePort } from '../helpers/ports.js';
import { nixEnv } from '../helpers/nix.js';
import { NIX_CLIENTS } from '../helpers/nix-clients.js';
import { runOk, stopAll } from '../helpers/proc.js';

const LEAVES = [{ name: 'big', size: 1_500_000 }, { name: 'small', size: 20_000 }];

/**
 * The proxy as it was before NARs were served uncompressed: it answered each
 * narinfo with the origin's Compression and a legacy URL naming the origin
 * (protocol/narurl.ts: formatLegacyNarUrl). Nix caches those for 30 days.
 */
async function oldProxy(h: Household, port: number): Promise<Server> {
  const id = originId(normaliseBaseUrl(h.pi.url));
  const server = createServer((req, res) => {
    const name = (req.url ?? '/').slice(1);
    if (name === 'nix-cache-info') return void res.end('StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n');
    readFile(join(h.piDir, name), 'utf8').then(
      (text) => {
        const info = parseNarInfo(text);
        const url = formatLegacyNarUrl({ storeHash: info.path.hash, narHash: info.narHash, compression: info.compression, originId: id, originUrl: info.url });
        res.writeHead(200, { 'content-type': 'text/x-nix-narinfo' }).end(req.method === 'HEAD' ? undefined : serialiseNarInfo({ ...info, url }));
      },
      () => res.writeHead(404).end(),
    );
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return server;
}

describe('upgrading the proxy while Nix holds narinfos it handed out before (legacy NAR URLs, xz promised)', () => {
  let h: Household;
  let proxy: ProxyProcess | undefined;
  beforeAll(async () => {
    h = await household('upg13', LEAVES);
  });
  afterAll(async () => {
    await proxy?.stop();
    await stopAll();
    await h?.cleanup();
  });

  for (const client of NIX_CLIENTS) it(`${client.name}: nix-store -r still substitutes with the narinfos cached before the upgrade, Pi up or gone`, async () => {
    const port = await freePort();
    const xdg = join(h.dir, `xdg-before-upgrade-${client.suite}`);
    const keys = [h.piKey.publicKey, h.upstreamKey.publicKey].flatMap((k) => ['--trusted-public-key', k]);
    // NLC_OLD_CLI=/path/to/old/dist/cli/main.js runs the real proxy of before the upgrade instead of its stand-in.
    const oldCli = process.env.NLC_OLD_CLI;
    const before = oldCli
      ? await startProxy(['--no-mdns', '--lan', h.pi.url, '--upstream', h.upstream.url, ...keys, '--listen', `127.0.0.1:${port}`], { cli: oldCli })
      : await oldProxy(h, port);
    try {
      // Nix's own disk cache of narinfos, made by the same Nix that reads it below (2.34's is another file than 2.8's).
      const [cmd, ...args] = client.wrap(['nix', 'path-info', '-r', '--store', `http://127.0.0.1:${port}`, h.closure.root, '--option', 'trusted-public-keys', h.trustedKeys.join(' ')]);
      const out = await runOk(cmd!, args, { env: nixEnv({ XDG_CACHE_HOME: xdg }) });
      expect(out.trim().split('\n')).toHaveLength(h.closure.paths.length);
    } finally {
      if ('stop' in before) await before.stop();
      else await new Promise((r) => before.close(r));
    }
    await proxy?.stop();
    proxy = await startProxy(['--no-mdns', '--lan', h.pi.url, '--upstream', h.upstream.url, ...keys, '--listen', `127.0.0.1:${port}`]);
    const res = await h.fetch(proxy.url, { client, xdgCache: xdg });
    expect(res.code, res.stderr).toBe(0);
    expect(h.closure.paths.every((p) => existsSync(join(res.store, p)))).toBe(true);
    // Nix asked for the legacy URLs it had cached, not for narinfos again.
    const legacy = proxy.logs.filter((l) => l.msg === 'request' && typeof l.url === 'string' && /^\/nar\/[0-9a-z]{32}\//.test(l.url));
    expect(legacy).toHaveLength(h.closure.paths.length);

    // The Pi goes away: the same cached narinfos are served from the zstd upstream, re-compressed into the xz they promised
    // (Nix 2.8 would sniff zstd bytes under `Compression: xz`; from 2.22 on Nix decodes only what the narinfo names).
    await h.pi.stop();
    try {
      const away = await h.fetch(proxy.url, { client, xdgCache: xdg });
      expect(away.code, away.stderr).toBe(0);
      expect(h.closure.paths.every((p) => existsSync(join(away.store, p)))).toBe(true);
    } finally {
      await h.pi.start();
    }
  });
});
