import { request } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { household, type Household } from '../helpers/scenario.js';
import { startProxy, type ProxyProcess } from '../helpers/proxy.js';
import { run, stopAll } from '../helpers/proc.js';
import { nixEnv } from '../helpers/nix.js';
import { readFile } from 'node:fs/promises';
import { parseNarInfo } from '../../src/protocol/narinfo.js';

const LEAVES = Array.from({ length: 4 }, (_, i) => ({ name: `leaf${i}`, size: 50_000 }));

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** A raw HTTP request: the path goes on the wire exactly as given (no URL normalisation). */
function get(base: string, path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Answer> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path, method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
    req.end();
  });
}

describe('the proxy as an HTTP server', () => {
  let h: Household;
  let proxy: ProxyProcess;
  const hashOf = (p: string) => p.slice('/nix/store/'.length, '/nix/store/'.length + 32);

  beforeAll(async () => {
    h = await household('returns', LEAVES);
    proxy = await startProxy(['--no-mdns', '--lan', h.pi.url, '--upstream', h.upstream.url, '--trusted-public-key', h.piKey.publicKey, '--trusted-public-key', h.upstreamKey.publicKey]);
  });
  afterAll(async () => {
    await proxy?.stop();
    await stopAll();
    await h?.cleanup();
  });

  it('the Pi returns: within 5 s new requests are served from it again', async () => {
    const [first, second] = h.closure.paths;
    await h.pi.stop();
    const away = await get(proxy.url, `/${hashOf(first!)}.narinfo`);
    expect(away.status).toBe(200);
    expect(away.headers['x-nix-lan-cache-origin']).toBe(new URL(h.upstream.url).host);

    await h.pi.start();
    const back = Date.now();
    let origin: unknown;
    for (let i = 0; i < 100 && Date.now() - back < 5000; i++) {
      origin = (await get(proxy.url, `/${hashOf(second!)}.narinfo`)).headers['x-nix-lan-cache-origin'];
      if (origin === new URL(h.pi.url).host) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(origin).toBe(new URL(h.pi.url).host);
    expect(Date.now() - back).toBeLessThan(5000);

    // And a fresh client gets every NAR from the Pi again (fetched now, or ahead: the loop's narinfo requests above
    // made the proxy fetch that path's NAR from the Pi already), none from upstream.
    type Nar = { requests: number; bytes: number };
    const nars = async () => {
      const s = (await (await fetch(`${proxy.url}/_/stats`)).json()) as { periods: { sinceInstall: { origins: Record<string, { nar: Nar }> } } };
      const of = (url: string) => s.periods.sinceInstall.origins[new URL(url).host]?.nar ?? { requests: 0, bytes: 0 };
      return { pi: of(h.pi.url), upstream: of(h.upstream.url) };
    };
    const before = await nars();
    const res = await h.fetch(proxy.url, { xdgCache: join(h.dir, 'xdg-back') });
    expect(res.code, res.stderr).toBe(0);
    const after = await nars();
    expect(after.pi.requests - before.pi.requests).toBe(h.closure.paths.length);
    expect(after.upstream).toEqual(before.upstream);
    const piFiles = new Set((await h.pi.narHits()).map((e) => e.uri));
    expect(piFiles.size).toBeGreaterThanOrEqual(h.closure.paths.length);
  });

  it('serves its own nix-cache-info and narinfos whose URL points back at the proxy, signatures intact', async () => {
    const info = await get(proxy.url, '/nix-cache-info');
    expect(info.body.toString()).toMatch(/^StoreDir: \/nix\/store\nWantMassQuery: 1\nPriority: \d+\n$/);
    const path = h.closure.paths[0]!;
    const served = parseNarInfo((await get(proxy.url, `/${hashOf(path)}.narinfo`)).body.toString());
    const original = parseNarInfo(await readFile(join(h.piDir, `${hashOf(path)}.narinfo`), 'utf8'));
    // Only unsigned fields change: the NAR reaches Nix uncompressed, named by its content.
    expect(served.url).toBe(`nar/${hashOf(path)}-${original.narHash.slice(7)}.nar`);
    expect(served).toMatchObject({ compression: 'none', fileHash: original.narHash, fileSize: original.narSize });
    const unsigned = { url: '', compression: '', fileHash: undefined, fileSize: undefined };
    expect({ ...served, ...unsigned }).toEqual({ ...original, ...unsigned });
    const head = await get(proxy.url, `/${hashOf(path)}.narinfo`, {}, 'HEAD');
    expect(head.status).toBe(200);
    expect(head.body.length).toBe(0);
  });

  it('Range requests on a NAR return exactly those bytes of the NAR (nix-store --dump)', async () => {
    const path = h.closure.paths[0]!;
    const served = parseNarInfo((await get(proxy.url, `/${hashOf(path)}.narinfo`)).body.toString());
    const file = Buffer.from((await run('sh', ['-c', `nix-store --dump '${path}' | base64 -w0`], { env: nixEnv() })).stdout, 'base64');
    expect(file.length).toBe(served.narSize);
    const whole = await get(proxy.url, `/${served.url}`);
    expect(whole.status).toBe(200);
    expect(whole.headers['accept-ranges']).toBe('bytes');
    expect(whole.body.equals(file)).toBe(true);
    const part = await get(proxy.url, `/${served.url}`, { range: 'bytes=100-' });
    expect(part.status).toBe(206);
    expect(part.headers['content-range']).toBe(`bytes 100-${file.length - 1}/${file.length}`);
    expect(part.body.equals(file.subarray(100))).toBe(true);
  });

  it('bad input gets a clear 4xx and the proxy stays up', async () => {
    const cases: Array<[string, number, string]> = [
      ['/tooshort.narinfo', 400, 'BAD_HASH'],
      ['/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee.narinfo', 400, 'BAD_HASH'], // 'e' is not in Nix's base-32
      ['/nar/../../etc/passwd', 400, 'BAD_PATH'],
      ['/nar/%2e%2e/%2e%2e/etc/passwd', 400, 'BAD_PATH'],
      ['/log/..', 400, 'BAD_PATH'],
      ['/nar/not-a-proxy-url.nar.xz', 400, 'BAD_PATH'],
      [`/${'a'.repeat(5000)}.narinfo`, 414, 'URI_TOO_LONG'],
      ['/no/such/route', 404, 'NOT_FOUND'],
      ['/favicon.ico', 404, 'NOT_FOUND'],
      ['/00000000000000000000000000000000.narinfo', 404, 'NOT_IN_ANY_ORIGIN'],
    ];
    for (const [path, status, code] of cases) {
      const res = await get(proxy.url, path);
      expect({ path, status: res.status }).toEqual({ path, status });
      expect(JSON.parse(res.body.toString())).toMatchObject({ error: code });
    }
    const post = await get(proxy.url, '/nix-cache-info', {}, 'POST');
    expect(post.status).toBe(404);
    expect(proxy.child.exitCode).toBeNull();
    expect((await get(proxy.url, '/nix-cache-info')).status).toBe(200);
  });
});
