import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import pino from 'pino';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { HttpOrigin } from '../../src/origins/http-origin.js';
import { OriginSet } from '../../src/origins/origin-set.js';
import { DEFAULT_TIMEOUTS } from '../../src/origins/timeouts.js';
import { parseNarInfo, serialiseNarInfo } from '../../src/protocol/narinfo.js';
import { formatLegacyNarUrl } from '../../src/protocol/narurl.js';
import { parseSha256 } from '../../src/protocol/hash.js';
import { parseSecretKey, signNarInfo, TrustedKeys } from '../../src/protocol/signing.js';
import { buildApp } from '../../src/server/app.js';
import { NarInfoResolver } from '../../src/server/narinfo-resolver.js';
import { Stats } from '../../src/stats/recorder.js';
import { Nginx } from '../helpers/nginx.js';
import { removeDir, tempDir } from '../helpers/nix.js';

async function text(body: AsyncIterable<Buffer>): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of body) chunks.push(c);
  return Buffer.concat(chunks).toString();
}

const log = pino({ level: 'silent' });
const HASH = 'a'.repeat(32);
const NAR_HASH = `sha256:${'1'.repeat(52)}`;
const SECRET = 'the laptop\'s secret, outside the cache\n';

function makeKey(name: string) {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const d = Buffer.from(privateKey.export({ format: 'jwk' }).d!, 'base64url');
  const x = Buffer.from(publicKey.export({ format: 'jwk' }).x!, 'base64url');
  return { secret: parseSecretKey(`${name}:${Buffer.concat([d, x]).toString('base64')}`), publicText: `${name}:${x.toString('base64')}` };
}
const piKey = makeKey('pi.lan-1');
const trusted = TrustedKeys.parse([piKey.publicText]);

function signedNarInfo(url: string): string {
  const text = [`StorePath: /nix/store/${HASH}-hello`, `URL: ${url}`, 'Compression: xz', `NarHash: ${NAR_HASH}`, 'NarSize: 200', 'References: ', ''].join('\n');
  return serialiseNarInfo(signNarInfo(parseNarInfo(text), piKey.secret));
}

/** The proxy's app in process, with `origins` as its LAN caches, not listening. */
function app(origins: HttpOrigin[]): { app: FastifyInstance; close: () => Promise<void> } {
  const set = new OriginSet(origins);
  const stats = new Stats();
  const resolver = new NarInfoResolver(set, { maxEntries: 100, hitTtlSeconds: 60, missTtlSeconds: 1, hedgeMs: { lan: 200, upstream: 0 } } as ConstructorParameters<typeof NarInfoResolver>[1], stats, log);
  const a = buildApp({ config: { priority: 30, lan: [], upstream: [], trustedPublicKeys: [] }, origins: set, resolver, stats, log });
  return { app: a, close: async () => (await a.close(), await set.close()) };
}

const lan = (url: string) => new HttpOrigin({ url, kind: 'lan', timeouts: DEFAULT_TIMEOUTS.lan, trusted, log });

async function listen(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ server: Server; url: string; hits: string[] }> {
  const hits: string[] = [];
  const server = createServer((req, res) => {
    hits.push(`${req.method} ${req.url}`);
    handler(req, res);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, hits };
}

describe('origin paths stay under the origin\'s base URL (real nginx)', () => {
  let dir: string;
  let nginx: Nginx;
  let origin: HttpOrigin;

  beforeAll(async () => {
    dir = await tempDir('i11-bounds');
    await mkdir(join(dir, 'www', 'cache', 'nar'), { recursive: true });
    await writeFile(join(dir, 'www', 'cache', 'nix-cache-info'), 'StoreDir: /nix/store\n');
    await writeFile(join(dir, 'www', 'secret.txt'), SECRET);
    await mkdir(join(dir, 'nginx'));
    nginx = await Nginx.start({ root: join(dir, 'www'), workDir: join(dir, 'nginx') });
    origin = lan(`${nginx.url}cache/`);
  });
  afterAll(async () => {
    await origin?.close();
    await nginx?.stop();
    if (dir) await removeDir(dir);
  });

  it('nginx itself decodes an encoded slash: `/cache/..%2fsecret.txt` is the file outside the cache (why the proxy must check)', async () => {
    const res = await request(`${nginx.url}cache/..%2fsecret.txt`);
    expect(res.statusCode).toBe(200);
    expect(await res.body.text()).toBe(SECRET);
  });

  it.each(['..%2fsecret.txt', '..%2Fsecret.txt', 'nar/..%2f..%2fsecret.txt', 'nar%2f..%2f..%2fsecret.txt', '%2e%2e/secret.txt', '.%2e/secret.txt', '..%5csecret.txt', '..\\secret.txt', 'nar/%2e%2e%2f%2e%2e%2fsecret.txt', '%zz', '//127.0.0.1/secret.txt', '/secret.txt'])(
    'refuses %s without asking nginx',
    async (path) => {
      const before = (await nginx.log()).length;
      const res = await origin.fetchFile(path);
      expect(res.status).toBe('absent');
      expect((await nginx.log()).slice(before)).toEqual([]);
    },
  );

  it('still fetches what is under the base path, percent-encoded or not', async () => {
    await writeFile(join(dir, 'www', 'cache', 'nar', 'a b.nar'), 'nar bytes');
    for (const path of ['nix-cache-info', 'nar/a%20b.nar', 'nar/./a%20b.nar']) {
      const res = await origin.fetchFile(path);
      expect(res.status, path).toBe('present');
      if (res.status === 'present') res.body.resume();
    }
  });

  it('a NAR URL crafted with `..%2f` in its origin part: the proxy answers without the secret and never asks nginx outside /cache/', async () => {
    const { app: a, close } = app([origin]);
    try {
      const before = (await nginx.log()).length;
      for (const originUrl of ['..%2fsecret.txt', 'nar/..%2f..%2fsecret.txt', '..%5c..%5csecret.txt']) {
        const url = `/${formatLegacyNarUrl({ storeHash: HASH, narHash: parseSha256(NAR_HASH)!, compression: 'xz', originId: origin.id, originUrl })}`;
        const res = await a.inject({ method: 'GET', url });
        expect(res.body).not.toContain('secret');
        expect(res.statusCode).not.toBe(200);
      }
      const asked = (await nginx.log()).slice(before).map((e) => e.uri);
      expect(asked.filter((u) => !u.startsWith('/cache/') || u.includes('secret'))).toEqual([]);
      // … and keeps answering.
      expect((await a.inject({ method: 'GET', url: '/nix-cache-info' })).statusCode).toBe(200);
    } finally {
      await close();
    }
  });
});

describe('redirects from an origin', () => {
  let loopbackService: Awaited<ReturnType<typeof listen>>;
  let pi: Awaited<ReturnType<typeof listen>>;
  let origin: HttpOrigin;
  let piBase: string;

  beforeAll(async () => {
    // A service on the laptop's own loopback that a LAN cache must never make the proxy call.
    loopbackService = await listen((_req, res) => res.end('loopback service answer (secret)'));
    pi = await listen((req, res) => {
      const to = (status: number, location: string) => {
        res.statusCode = status;
        res.setHeader('location', location);
        res.end();
      };
      const port = new URL(pi.url).port;
      const u = req.url ?? '';
      if (u === '/cache/to-loopback') return to(302, `${loopbackService.url}/x`);
      if (u === `/cache/${HASH}.narinfo`) return to(302, `${loopbackService.url}/${HASH}.narinfo`);
      if (u === `/cache/${HASH}.ls`) return to(307, `${loopbackService.url}/${HASH}.ls`);
      if (u === '/cache/to-other-host-name') return to(302, `http://localhost:${port}/cache/real`);
      if (u === '/cache/to-ipv6-loopback') return to(302, `http://[::1]:${port}/cache/real`);
      if (u === '/cache/to-outside-base') return to(302, '/secret');
      if (u === '/cache/to-encoded-slash') return to(302, '/cache/..%2fsecret');
      if (u === '/cache/same') return to(302, '/cache/real');
      if (u === '/cache/relative') return to(301, 'real');
      if (u === '/cache/chain') return to(301, '/cache/c1');
      if (u === '/cache/c1') return to(307, '/cache/c2');
      if (u === '/cache/c2') return to(308, '/cache/real');
      if (u === '/cache/loop') return to(302, '/cache/loop');
      if (u === '/cache/real') return res.end('real');
      if (u === '/cache/good.narinfo') return res.end('never');
      res.statusCode = 404;
      res.end();
    });
    piBase = `${pi.url}/cache/`;
    origin = lan(piBase);
  });
  afterAll(async () => {
    await origin?.close();
    loopbackService?.server.close();
    pi?.server.close();
  });

  it.each(['to-loopback', 'to-other-host-name', 'to-ipv6-loopback', 'to-outside-base', 'to-encoded-slash'])('%s: not followed, answered as absent', async (path) => {
    const before = pi.hits.length;
    const res = await origin.fetchFile(path);
    expect(res.status).toBe('absent');
    expect(pi.hits.slice(before)).toEqual([`GET /cache/${path}`]);
    expect(loopbackService.hits).toEqual([]);
  });

  it('same-origin redirects under the base path are followed, at most 3 in a row', async () => {
    for (const path of ['same', 'relative', 'chain']) {
      const res = await origin.fetchFile(path);
      expect(res.status, path).toBe('present');
      if (res.status === 'present') expect(await text(res.body)).toBe('real');
    }
    const before = pi.hits.length;
    expect((await origin.fetchFile('loop')).status).toBe('absent');
    expect(pi.hits.length - before).toBe(4); // the request and 3 redirects, then no more
    expect(origin.breaker.isOpen).toBe(false); // it answered; it is not down
  });

  it('through the proxy: a narinfo and an (unsigned) listing redirected to a loopback service are 404s, and the service is never called', async () => {
    const { app: a, close } = app([origin]);
    try {
      const narinfo = await a.inject({ method: 'GET', url: `/${HASH}.narinfo` });
      expect(narinfo.statusCode).toBe(404);
      const listing = await a.inject({ method: 'GET', url: `/${HASH}.ls` });
      expect(listing.statusCode).toBe(404);
      expect(listing.body).not.toContain('secret');
      expect(loopbackService.hits).toEqual([]);
    } finally {
      await close();
    }
  });
});

describe('HEAD on a narinfo (in process)', () => {
  it('HEAD answers like GET without a body, for a narinfo that is there and one that is not; the proxy keeps answering', async () => {
    const text = signedNarInfo('nar/1.nar.xz');
    const served = await listen((req, res) => {
      if (req.url === `/${HASH}.narinfo`) {
        res.setHeader('content-type', 'text/x-nix-narinfo');
        return res.end(text);
      }
      res.statusCode = 404;
      res.end();
    });
    const origin = lan(`${served.url}/`);
    const { app: a, close } = app([origin]);
    try {
      const get = await a.inject({ method: 'GET', url: `/${HASH}.narinfo` });
      expect(get.statusCode).toBe(200);
      const head = await a.inject({ method: 'HEAD', url: `/${HASH}.narinfo` });
      expect(head.statusCode).toBe(200);
      expect(head.body).toBe('');
      expect(head.headers['content-type']).toMatch(/^text\/x-nix-narinfo/);
      expect(Number(head.headers['content-length'])).toBe(Buffer.byteLength(get.body));
      const missing = await a.inject({ method: 'HEAD', url: `/${'b'.repeat(32)}.narinfo` });
      expect(missing.statusCode).toBe(404);
      expect(missing.body).toBe('');
      const bad = await a.inject({ method: 'HEAD', url: '/not-a-hash.narinfo' });
      expect(bad.statusCode).toBe(400);
      expect((await a.inject({ method: 'GET', url: `/${HASH}.narinfo` })).body).toBe(get.body);
    } finally {
      await close();
      await origin.close();
      served.server.close();
    }
  });
});
