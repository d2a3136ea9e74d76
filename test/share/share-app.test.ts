import { chmod, readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultShare, type ShareConfig } from '../../src/config/sharing.js';
import { parseCidr, PRIVATE_NETWORKS } from '../../src/protocol/cidr.js';
import { parseNarInfo } from '../../src/protocol/narinfo.js';
import { TrustedKeys } from '../../src/protocol/signing.js';
import { buildShareApp } from '../../src/share/app.js';
import { ClientLimits } from '../../src/share/limits.js';
import { SharedPaths } from '../../src/share/shared-paths.js';
import { ShareStats } from '../../src/share/share-stats.js';
import { LocalStore, StoreError } from '../../src/store/local-store.js';
import { addUnsigned, signIn, substituteInto } from '../helpers/laptop-store.js';
import { buildClosure, buildPath, generateKey, makeStaticCache, nixEnv, removeDir, tempDir, type CacheKey, type Closure } from '../helpers/nix.js';
import { runOk } from '../helpers/proc.js';
import { until } from '../helpers/wait.js';

/**
 * The share in process (fastify inject), over a real laptop store made by
 * real Nix: a closure substituted from a cache signed by a key the laptop
 * trusts, a path it built itself (unsigned), one signed only by a key it
 * does not trust. What the share gives away, and what it refuses.
 */
describe('the share answers other machines from its own store', () => {
  let dir: string;
  let closure: Closure;
  let own: string;
  let evilOnly: string;
  let upstream: CacheKey;
  let evil: CacheKey;
  let laptop: string;
  const apps: FastifyInstance[] = [];

  const h = (p: string) => p.slice(11, 43);

  beforeAll(async () => {
    dir = await tempDir('share-app');
    [closure, own, evilOnly] = await Promise.all([
      buildClosure('share-app', [{ name: 'leaf-a', size: 3000 }, { name: 'leaf-b', size: 150_000 }]),
      buildPath('share-app', 'built-here', '/bin/echo mine > $out'),
      buildPath('share-app', 'signed-by-a-stranger', '/bin/echo theirs > $out'),
    ]);
    [upstream, evil] = await Promise.all([generateKey(dir, 'upstream-1'), generateKey(dir, 'evil-1')]);
    await makeStaticCache(join(dir, 'cache'), [closure.root], upstream, 'xz');
    laptop = join(dir, 'laptop');
    await substituteInto(laptop, [closure.root], join(dir, 'cache'), upstream);
    await addUnsigned(laptop, [own, evilOnly]);
    await signIn(laptop, [evilOnly, closure.root], evil); // the root now carries both signatures
  });
  afterAll(async () => {
    for (const app of apps) await app.close();
    if (dir) await removeDir(dir);
  });

  function share(limits: Partial<ShareConfig> = {}, store = laptop) {
    const config = { ...defaultShare(), ...limits };
    const stats = new ShareStats();
    const deps = {
      paths: new SharedPaths(new LocalStore(store), TrustedKeys.parse([upstream.publicKey])),
      storeDir: join(store, 'nix/store'),
      limits: new ClientLimits(config),
      allow: config.allow.map(parseCidr),
      stats,
      log: pino({ level: 'silent' }),
    };
    const app = buildShareApp(deps);
    apps.push(app);
    return { app, stats, limits: deps.limits };
  }

  async function narinfoOf(app: FastifyInstance, path: string) {
    const res = await app.inject({ url: `/${h(path)}.narinfo`, remoteAddress: '192.168.1.20' });
    expect(res.statusCode, res.body).toBe(200);
    return parseNarInfo(res.body);
  }

  /** A GET with the request line exactly as given. */
  async function rawGet(port: number, path: string): Promise<{ status: number; body: string }> {
    const socket = connect(port, '127.0.0.1');
    socket.end(`GET ${path} HTTP/1.1\r\nHost: share\r\nConnection: close\r\n\r\n`);
    let text = '';
    for await (const chunk of socket) text += (chunk as Buffer).toString('latin1');
    return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]), body: text.slice(text.indexOf('\r\n\r\n') + 4) };
  }

  async function nixDump(path: string): Promise<Buffer> {
    return Buffer.from(await runOk('sh', ['-c', `nix-store --dump ${path} | base64 -w0`], { env: nixEnv() }), 'base64');
  }

  it('a path signed by a trusted key: a narinfo with the NAR uncompressed, only what the signature covers, only trusted signatures', async () => {
    const { app } = share();
    const info = await narinfoOf(app, closure.root);
    expect(info.storePath).toBe(closure.root);
    expect(info.compression).toBe('none');
    expect(info.url).toBe(`nar/${h(closure.root)}-${info.narHash.slice(7)}.nar`);
    expect(info.fileHash).toBe(info.narHash);
    expect(info.references.sort()).toEqual(closure.paths.filter((p) => p !== closure.root).map((p) => p.slice(11)).sort());
    expect(info.sigs).toEqual([expect.stringMatching(/^upstream-1:/)]); // not evil-1's
    expect(info.deriver).toBeUndefined(); // a local .drv path is not given away
    expect(TrustedKeys.parse([upstream.publicKey]).verify(info)).toBe('upstream-1');
    const res = await app.inject({ url: `/${h(closure.root)}.narinfo`, remoteAddress: '192.168.1.20' });
    expect(res.headers['content-type']).toMatch(/^text\/x-nix-narinfo/);
  });

  it('a path built here (unsigned) or signed only by an untrusted key is not shared: the very answer of a path that is not there', async () => {
    const { app, stats } = share();
    const answers = await Promise.all(
      [own, evilOnly, `/nix/store/${'0'.repeat(32)}-absent`].map((p) => app.inject({ url: `/${h(p)}.narinfo`, remoteAddress: '10.1.2.3' })),
    );
    const strip = (r: (typeof answers)[number]) => ({ status: r.statusCode, body: r.body, headers: { ...r.headers, date: undefined } });
    expect(strip(answers[0]!)).toEqual(strip(answers[2]!));
    expect(strip(answers[1]!)).toEqual(strip(answers[2]!));
    expect(answers[0]!.statusCode).toBe(404);
    expect(JSON.parse(answers[0]!.body)).toEqual({ error: 'NOT_FOUND', message: 'not shared here' });
    // Nor their NARs, even asked for with their true NarHash.
    const store = new LocalStore(laptop);
    for (const p of [own, evilOnly]) {
      const narHash = store.lookup(h(p))!.info()!.narHash;
      const nar = await app.inject({ url: `/nar/${h(p)}-${narHash.slice(7)}.nar`, remoteAddress: '10.1.2.3' });
      expect(nar.statusCode).toBe(404);
      expect(nar.body).toBe(answers[2]!.body);
    }
    store.close();
    expect(stats.totals).toMatchObject({ narinfoServed: 0, narinfoNotShared: 3, nars: 0 });
  });

  it('streams the NAR byte for byte as nix-store --dump, uncompressed, with Accept-Ranges; HEAD answers the head alone', async () => {
    const { app, stats } = share();
    const leaf = closure.paths.find((p) => p.endsWith('leaf-b'))!;
    const info = await narinfoOf(app, leaf);
    const expected = await nixDump(leaf);
    const res = await app.inject({ url: `/${info.url}`, remoteAddress: '192.168.1.20' });
    expect(res.statusCode).toBe(200);
    expect(res.rawPayload.equals(expected)).toBe(true);
    expect(res.headers).toMatchObject({ 'content-length': String(expected.length), 'accept-ranges': 'bytes', 'content-type': 'application/x-nix-nar' });
    expect(res.headers['content-encoding']).toBeUndefined();
    const head = await app.inject({ method: 'HEAD', url: `/${info.url}`, remoteAddress: '192.168.1.20' });
    expect(head.statusCode).toBe(200);
    expect(head.headers['content-length']).toBe(String(expected.length));
    expect(head.rawPayload.length).toBe(0);
    const headInfo = await app.inject({ method: 'HEAD', url: `/${h(leaf)}.narinfo`, remoteAddress: '192.168.1.20' });
    expect(headInfo.statusCode).toBe(200);
    expect(headInfo.rawPayload.length).toBe(0);
    const headOwn = await app.inject({ method: 'HEAD', url: `/${h(own)}.narinfo`, remoteAddress: '192.168.1.20' });
    expect(headOwn.statusCode).toBe(404);
    expect(stats.totals.bytes).toBe(expected.length);
    // A NarHash that is not this path's: not here.
    const wrong = await app.inject({ url: `/nar/${h(leaf)}-${'0'.repeat(52)}.nar`, remoteAddress: '192.168.1.20' });
    expect(wrong.statusCode).toBe(404);
  });

  it('answers Range: the rest from an offset (206), a bounded part, 416 past the end, the whole NAR for a Range it cannot read', async () => {
    const { app } = share();
    const leaf = closure.paths.find((p) => p.endsWith('leaf-b'))!;
    const info = await narinfoOf(app, leaf);
    const nar = await nixDump(leaf);
    const get = (range: string) => app.inject({ url: `/${info.url}`, headers: { range }, remoteAddress: '192.168.1.20' });
    const rest = await get('bytes=100000-');
    expect(rest.statusCode).toBe(206);
    expect(rest.headers['content-range']).toBe(`bytes 100000-${nar.length - 1}/${nar.length}`);
    expect(rest.rawPayload.equals(nar.subarray(100000))).toBe(true);
    const part = await get('bytes=8-99');
    expect(part.statusCode).toBe(206);
    expect(part.rawPayload.equals(nar.subarray(8, 100))).toBe(true);
    const past = await get(`bytes=${nar.length}-`);
    expect(past.statusCode).toBe(416);
    expect(past.headers['content-range']).toBe(`bytes */${nar.length}`);
    expect(past.rawPayload.length).toBe(0);
    const odd = await get('bytes=abc');
    expect(odd.statusCode).toBe(200);
    expect(odd.rawPayload.equals(nar)).toBe(true);
  });

  it('refuses paths outside the store, listings and malformed names with a clear error', async () => {
    const { app } = share();
    const ask = (url: string) => app.inject({ url, remoteAddress: '192.168.1.20' });
    // Sent as is over a socket: an HTTP client (and fastify's inject) would remove the dot segments itself.
    await app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = app.server.address() as { port: number };
    for (const url of ['/../../etc/passwd', '/nar/..%2F..%2Fetc%2Fpasswd', '/%2e%2e/%2e%2e/etc/shadow', `/nar/x/../../${h(closure.root)}.narinfo`, '/nar/%5c..%5cetc', '/nar/..\\..\\etc']) {
      const res = await rawGet(port, url);
      expect(res.status, url).toBe(400);
      expect(JSON.parse(res.body).error).toBe('BAD_PATH');
    }
    for (const url of ['/abc.narinfo', `/${'e'.repeat(32)}.narinfo`, `/${h(closure.root)}x.narinfo`]) {
      const res = await ask(url);
      expect(res.statusCode, url).toBe(400);
      expect(JSON.parse(res.body).error).toBe('BAD_HASH');
    }
    for (const url of [`/nar/${h(closure.root)}.nar`, `/nar/${h(closure.root)}-${'0'.repeat(52)}.nar.xz`, '/nar/garbage', '/nar/']) expect((await ask(url)).statusCode, url).toBe(400);
    for (const url of ['/', '/nix/store', closure.root, '/.links', `/${h(closure.root)}.ls`, '/log/x', '/_/stats', '/_/share']) expect((await ask(url)).statusCode, url).toBe(404);
    expect((await ask(`/${'a'.repeat(2000)}`)).statusCode).toBe(414);
    const cacheInfo = await ask('/nix-cache-info');
    expect(cacheInfo.body).toMatch(/^StoreDir: \/nix\/store$/m);
  });

  it('serves only the allowed networks (default: private ranges and loopback)', async () => {
    const { app, stats } = share();
    const url = `/${h(closure.root)}.narinfo`;
    for (const ok of ['192.168.1.20', '10.9.8.7', '172.20.0.1', '169.254.3.4', '127.0.0.1', 'fd12::1', '::ffff:192.168.0.9']) expect((await app.inject({ url, remoteAddress: ok })).statusCode, ok).toBe(200);
    for (const bad of ['203.0.113.5', '8.8.8.8', '100.64.0.1', '2001:db8::1', '::ffff:8.8.8.8']) {
      const res = await app.inject({ url, remoteAddress: bad });
      expect(res.statusCode, bad).toBe(403);
      expect(JSON.parse(res.body)).toEqual({ error: 'FORBIDDEN', message: 'this share does not serve your network' });
    }
    expect(stats.totals.refused.network).toBe(5);
    const narrow = share({ allow: ['192.168.7.0/24'] });
    expect((await narrow.app.inject({ url, remoteAddress: '192.168.7.44' })).statusCode).toBe(200);
    expect((await narrow.app.inject({ url, remoteAddress: '192.168.1.20' })).statusCode).toBe(403);
  });

  it('bounds each client: requests in flight (429 with Retry-After), and others are not held back by it', async () => {
    const { app, limits, stats } = share({ clientMaxInFlight: 2, clientBytesPerSecond: 100_000 });
    const leaf = closure.paths.find((p) => p.endsWith('leaf-b'))!; // ~150 kB: about 1.5 s at 100 kB/s
    const info = await narinfoOf(app, leaf);
    const nar = await nixDump(leaf);
    const slow = [0, 1].map(() => app.inject({ url: `/${info.url}`, remoteAddress: '192.168.1.20' }));
    await until('two NARs in flight', 5000, () => limits.running === 2);
    const third = await app.inject({ url: `/${info.url}`, remoteAddress: '192.168.1.20' });
    expect(third.statusCode).toBe(429);
    expect(third.headers['retry-after']).toBe('1');
    expect(JSON.parse(third.body).error).toBe('TOO_MANY_REQUESTS');
    // Another machine meanwhile: served.
    expect((await app.inject({ url: `/${h(leaf)}.narinfo`, remoteAddress: '192.168.1.21' })).statusCode).toBe(200);
    for (const res of await Promise.all(slow)) expect(res.rawPayload.equals(nar)).toBe(true);
    expect(limits.running).toBe(0);
    expect((await app.inject({ url: `/${h(leaf)}.narinfo`, remoteAddress: '192.168.1.20' })).statusCode).toBe(200);
    expect(stats.totals.refused.busy).toBe(1);
  });

  it('bounds all clients together, and each client to a rate of requests', async () => {
    const all = share({ maxInFlight: 1, clientBytesPerSecond: 100_000 });
    const leaf = closure.paths.find((p) => p.endsWith('leaf-b'))!;
    const info = await narinfoOf(all.app, leaf);
    const first = all.app.inject({ url: `/${info.url}`, remoteAddress: '192.168.1.20' });
    await until('one NAR in flight', 5000, () => all.limits.running === 1);
    const other = await all.app.inject({ url: `/${h(leaf)}.narinfo`, remoteAddress: '192.168.1.99' });
    expect(other.statusCode).toBe(429);
    expect(JSON.parse(other.body).message).toMatch(/the share is busy/);
    expect((await first).statusCode).toBe(200);

    const rate = share({ clientRequestsPerSecond: 1, clientBurst: 3 });
    const codes: number[] = [];
    for (let i = 0; i < 4; i++) codes.push((await rate.app.inject({ url: `/${h(leaf)}.narinfo`, remoteAddress: '192.168.1.20' })).statusCode);
    expect(codes).toEqual([200, 200, 200, 429]);
    expect((await rate.app.inject({ url: `/${h(leaf)}.narinfo`, remoteAddress: '192.168.1.21' })).statusCode).toBe(200);
    expect(rate.stats.totals.refused.rate).toBe(1);
  });

  it('a store file that no longer matches its NarHash: the NAR is aborted, never completed', async () => {
    const tampered = join(dir, 'tampered');
    const leaf = closure.paths.find((p) => p.endsWith('leaf-b'))!;
    await substituteInto(tampered, [leaf], join(dir, 'cache'), upstream);
    const file = join(tampered, leaf);
    await chmod(file, 0o644);
    const bytes = await readFile(file);
    bytes[bytes.length - 10] = bytes[bytes.length - 10]! ^ 0xff; // same size, one byte flipped near the end
    await writeFile(file, bytes);
    const { app, stats } = share({}, tampered);
    await app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = app.server.address() as { port: number };
    const info = await narinfoOf(app, leaf);
    const res = await request(`http://127.0.0.1:${port}/${info.url}`);
    expect(res.statusCode).toBe(200); // the head went out with the first bytes …
    let got = 0;
    const read = (async () => {
      for await (const chunk of res.body) got += (chunk as Buffer).length;
    })();
    await expect(read).rejects.toThrow(); // … and the body was cut, not ended
    expect(got).toBeLessThan(info.narSize);
    expect(stats.totals.narsMismatched).toBe(1);
  });

  it('a store it cannot read answers 503 (the peer goes on elsewhere), not a 404 Nix would cache', async () => {
    const stats = new ShareStats();
    const app = buildShareApp({
      paths: { find: async () => Promise.reject(new StoreError('database is locked')) },
      storeDir: '/nonexistent',
      limits: new ClientLimits(defaultShare()),
      allow: PRIVATE_NETWORKS.map(parseCidr),
      stats,
      log: pino({ level: 'silent' }),
    });
    apps.push(app);
    const res = await app.inject({ url: `/${h(closure.root)}.narinfo` });
    expect(res.statusCode).toBe(503);
    expect(JSON.parse(res.body)).toEqual({ error: 'STORE_UNAVAILABLE', message: 'the store cannot be read right now' });
  });
});
