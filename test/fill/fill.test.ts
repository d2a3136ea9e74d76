import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { get as httpGet, type IncomingMessage } from 'node:http';
import { join } from 'node:path';
import pino from 'pino';
import { request } from 'undici';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildFillApp } from '../../src/fill/app.js';
import { cacheBytes, CacheSize } from '../../src/fill/cache-size.js';
import { LocalFillStore } from '../../src/fill/store.js';
import { Filler } from '../../src/fill/filler.js';
import { FillStats } from '../../src/fill/stats.js';
import { HttpOrigin } from '../../src/origins/http-origin.js';
import { parseNarInfo } from '../../src/protocol/narinfo.js';
import { TrustedKeys } from '../../src/protocol/signing.js';
import { LocalTarget } from '../../src/push/local-target.js';
import { verify } from '../../src/push/verify.js';
import { FakeUpstream, makeKey, randomStoreHash, type FakePath } from '../helpers/fake-upstream.js';
import { removeDir, tempDir } from '../helpers/nix.js';

const upstreamKey = makeKey('upstream-1');
const strangerKey = makeKey('stranger-1');

interface Pi {
  app: FastifyInstance;
  url: string;
  cache: string;
  stats: FillStats;
  filler: Filler;
  upstreams: HttpOrigin[];
  logs: Array<Record<string, unknown>>;
}

let dir: string;
let upstream: FakeUpstream;
let pi: Pi;

async function startFill(opts: { maxSize?: number; upstreamUrl?: string } = {}): Promise<Pi> {
  const cache = join(dir, 'cache');
  const logs: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
  const target = new LocalTarget(cache);
  await target.open(false);
  const trusted = TrustedKeys.parse([upstreamKey.publicText]);
  const upstreams = [
    new HttpOrigin({
      url: opts.upstreamUrl ?? upstream.url,
      kind: 'upstream',
      timeouts: { connectMs: 1000, firstByteMs: 2000, bodyIdleMs: 3000, probeIntervalMs: 60_000, maxFails: 1, hedgeMs: 0 },
      trusted,
      log,
    }),
  ];
  const stats = new FillStats();
  const size = new CacheSize(() => cacheBytes(cache));
  await size.start(60_000);
  const store = new LocalFillStore(target);
  const filler = new Filler({ target: store, upstreams, stats, log, size, maxSize: opts.maxSize });
  await filler.open();
  const app = buildFillApp({ store, filler, upstreams, stats, log });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}/`;
  return {
    app,
    url,
    cache,
    stats,
    filler,
    upstreams,
    logs,
  };
}

async function stopFill(p: Pi): Promise<void> {
  await p.filler.close();
  // As the CLI does: connections that finished a NAR would otherwise sit in keep-alive until they time out.
  const sweep = setInterval(() => p.app.server.closeIdleConnections(), 100);
  await p.app.close().finally(() => clearInterval(sweep));
  await Promise.all(p.upstreams.map((o) => o.close()));
}

async function get(path: string): Promise<{ status: number; body: Buffer; text: string }> {
  const res = await request(new URL(path, pi.url));
  const body = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, body, text: body.toString() };
}

function rawGet(path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(pi.url);
    const req = httpGet({ host: u.hostname, port: u.port, path }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

/** A NAR download that must fail: resolves with how it failed (never with a complete body). */
async function brokenDownload(path: string): Promise<string> {
  let res;
  try {
    res = await request(new URL(path, pi.url));
  } catch (err) {
    return `aborted before the head: ${(err as Error).message}`;
  }
  if (res.statusCode !== 200) return `HTTP ${res.statusCode}`;
  try {
    await res.body.arrayBuffer();
  } catch (err) {
    return `aborted: ${(err as Error).message}`;
  }
  return 'completed';
}

/** Waits (bounded) until `<hash>.narinfo` is published. */
async function published(p: FakePath, cache = pi.cache): Promise<string> {
  for (let i = 0; i < 200; i++) {
    const text = await readFile(join(cache, `${p.storeHash}.narinfo`), 'utf8').catch(() => undefined);
    if (text) return text;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`${p.storeHash}.narinfo was never published`);
}

async function leftovers(): Promise<string[]> {
  const top = (await readdir(pi.cache)).filter((n) => n.startsWith('.tmp-'));
  const nar = (await readdir(join(pi.cache, 'nar'))).filter((n) => n.startsWith('.tmp-')).map((n) => `nar/${n}`);
  return [...top, ...nar];
}

beforeEach(async () => {
  dir = await tempDir('fill');
  upstream = new FakeUpstream(upstreamKey.secret);
  await upstream.start();
  pi = await startFill();
});
afterEach(async () => {
  await stopFill(pi);
  await upstream.stop();
  await removeDir(dir);
});

describe('fill: a miss at the Pi is filled from upstream', () => {
  it('answers the narinfo at once with the URL in push layout, streams the NAR, then publishes NAR and narinfo; verify accepts the cache', async () => {
    const dep = upstream.add('dep', 50_000, { compression: 'xz' });
    const top = upstream.add('top', 300_000, { compression: 'zstd', references: [dep] });

    for (const p of [dep, top]) {
      const ni = await get(`${p.storeHash}.narinfo`);
      expect(ni.status).toBe(200);
      const info = parseNarInfo(ni.text);
      expect(info.url).toBe(p.info.url); // upstream's FileHash and compression kept: same name as push/nix copy
      expect(info.sigs).toEqual(p.info.sigs);
      const nar = await get(info.url);
      expect(nar.status).toBe(200);
      expect(nar.body.equals(p.file)).toBe(true);
    }
    expect(parseNarInfo(await published(top)).url).toBe(top.info.url);
    await published(dep);
    expect(existsSync(join(pi.cache, top.info.url))).toBe(true);
    const report = await verify(pi.cache, { deep: true, concurrency: 2, trustedKeys: TrustedKeys.parse([upstreamKey.publicText]) });
    expect(report.problems).toEqual([]);
    expect(report.narinfos).toBe(2);
    expect(upstream.narRequests(top)).toBe(1);
    expect(upstream.narRequests(dep)).toBe(1);
    expect(pi.stats.pathsFilled).toBe(2);
    expect(pi.stats.bytesFromUpstream).toBe(top.file.length + dep.file.length);
    expect(await leftovers()).toEqual([]);
  });

  it("publishes a path only after its references: a reference nobody asked for is fetched by fill itself", async () => {
    const dep = upstream.add('dep', 20_000);
    const top = upstream.add('top', 20_000, { references: [dep] });
    const info = parseNarInfo((await get(`${top.storeHash}.narinfo`)).text);
    expect((await get(info.url)).body.equals(top.file)).toBe(true);
    await published(top);
    expect(existsSync(join(pi.cache, `${dep.storeHash}.narinfo`))).toBe(true);
    expect(upstream.narRequests(dep)).toBe(1);
    expect((await verify(pi.cache, { deep: true, concurrency: 2 })).problems).toEqual([]);
  });

  it('concurrent requests for one NAR share one download, also a client that comes half way through', async () => {
    const p = upstream.add('big', 2_000_000, { compression: 'none', misbehave: 'stall' });
    const info = parseNarInfo((await get(`${p.storeHash}.narinfo`)).text);
    const early = [get(info.url), get(info.url), get(info.url)];
    // Wait until the first half has reached the Pi, then ask again: this one reads what is on disk and follows live.
    for (let i = 0; i < 200 && pi.stats.bytesFromUpstream < p.file.length >> 1; i++) await new Promise((r) => setTimeout(r, 25));
    expect(pi.stats.bytesFromUpstream).toBe(p.file.length >> 1);
    const late = get(info.url);
    await new Promise((r) => setTimeout(r, 100));
    upstream.release();
    for (const r of await Promise.all([...early, late])) {
      expect(r.status).toBe(200);
      expect(r.body.equals(p.file)).toBe(true);
    }
    expect(upstream.narRequests(p)).toBe(1);
    await published(p);
  });

  it('fill restarted between the narinfo and its NAR request still fills the NAR (Nix keeps narinfos for 30 days)', async () => {
    const p = upstream.add('x', 30_000);
    const info = parseNarInfo((await get(`${p.storeHash}.narinfo`)).text);
    await stopFill(pi);
    pi = await startFill();
    const nar = await get(info.url);
    expect(nar.status).toBe(200);
    expect(nar.body.equals(p.file)).toBe(true);
    await published(p);
    // The record goes once the path is published.
    for (let i = 0; i < 100 && (await readdir(join(pi.cache, '.fill'))).length > 0; i++) await new Promise((r) => setTimeout(r, 25));
    expect(await readdir(join(pi.cache, '.fill'))).toEqual([]);
  });

  it('a client that hangs up mid-NAR does not stop the fill; no temporary file is left', async () => {
    const p = upstream.add('big', 1_000_000, { compression: 'none', misbehave: 'stall' });
    const info = parseNarInfo((await get(`${p.storeHash}.narinfo`)).text);
    const u = new URL(pi.url);
    const req = httpGet({ host: u.hostname, port: u.port, path: `/${info.url}` });
    const res = await new Promise<IncomingMessage>((resolve, reject) => req.on('response', resolve).on('error', reject));
    expect(res.statusCode).toBe(200);
    for (let i = 0; i < 200 && pi.stats.bytesFromUpstream === 0; i++) await new Promise((r) => setTimeout(r, 25));
    req.on('error', () => {});
    req.destroy(); // the laptop hangs up: its socket closes
    await new Promise((r) => setTimeout(r, 100));
    upstream.release();
    await published(p);
    expect((await readFile(join(pi.cache, info.url))).equals(p.file)).toBe(true);
    expect(await leftovers()).toEqual([]);
  });
});

describe('fill: nothing untrusted or broken is published', () => {
  it('a narinfo signed by a key fill does not trust is a 404 and is never written', async () => {
    const p = upstream.add('evil', 10_000, { signWith: strangerKey.secret });
    expect((await get(`${p.storeHash}.narinfo`)).status).toBe(404);
    expect((await get(p.info.url)).status).toBe(404); // never handed out, so not filled either
    expect(existsSync(join(pi.cache, `${p.storeHash}.narinfo`))).toBe(false);
    expect(pi.stats.untrustedNarinfos).toBe(1);
    expect(upstream.narRequests(p)).toBe(0);
  });

  it('a NAR that does not match its signed narinfo: the client stream is aborted, nothing is published, the log says why', async () => {
    const p = upstream.add('corrupt', 200_000, { compression: 'zstd', misbehave: 'corrupt' });
    const info = parseNarInfo((await get(`${p.storeHash}.narinfo`)).text);
    expect(await brokenDownload(info.url)).toMatch(/^aborted/);
    for (let i = 0; i < 100 && pi.stats.hashFailures === 0; i++) await new Promise((r) => setTimeout(r, 25));
    expect(pi.stats.hashFailures).toBe(1);
    expect(existsSync(join(pi.cache, `${p.storeHash}.narinfo`))).toBe(false);
    expect(existsSync(join(pi.cache, info.url))).toBe(false);
    expect(await leftovers()).toEqual([]);
    expect(pi.logs.some((l) => l.event === 'fill-hash-mismatch')).toBe(true);
    // For a while the path is a miss here, and the broken file a 404: clients take it from another cache.
    expect((await get(`${p.storeHash}.narinfo`)).status).toBe(404);
    expect((await get(info.url)).status).toBe(404);
    expect(upstream.narRequests(p)).toBe(1);
  });

  it('a path whose reference failed its check is served but not published, and the bad reference is not downloaded again', async () => {
    const dep = upstream.add('dep', 100_000, { compression: 'zstd', misbehave: 'corrupt' });
    const top = upstream.add('top', 10_000, { references: [dep] });
    const depInfo = parseNarInfo((await get(`${dep.storeHash}.narinfo`)).text);
    expect(await brokenDownload(depInfo.url)).toMatch(/^aborted/);
    const topInfo = parseNarInfo((await get(`${top.storeHash}.narinfo`)).text);
    expect((await get(topInfo.url)).body.equals(top.file)).toBe(true);
    // Neither is published: the reference (its NAR is bad), and so the path that needs it.
    for (let i = 0; i < 100 && pi.stats.publishFailures < 2; i++) await new Promise((r) => setTimeout(r, 25));
    expect(pi.stats.publishFailures).toBe(2);
    expect(pi.logs.filter((l) => l.event === 'fill-not-published').map((l) => l.storeHash).sort()).toEqual([dep.storeHash, top.storeHash].sort());
    expect(existsSync(join(pi.cache, `${top.storeHash}.narinfo`))).toBe(false);
    expect(upstream.narRequests(dep)).toBe(1);
    expect((await verify(pi.cache, { deep: false, concurrency: 2 })).problems).toEqual([]);
  });

  it('an upstream that cuts the NAR half way: the client is aborted, never given a short NAR; nothing left behind', async () => {
    const p = upstream.add('cut', 400_000, { compression: 'none', misbehave: 'cut' });
    const info = parseNarInfo((await get(`${p.storeHash}.narinfo`)).text);
    expect(await brokenDownload(info.url)).toMatch(/^aborted/);
    await new Promise((r) => setTimeout(r, 100));
    expect(existsSync(join(pi.cache, info.url))).toBe(false);
    expect(await leftovers()).toEqual([]);
    expect(pi.stats.upstreamFailures).toBe(1);
  });

  it('over --max-size: the client is served, nothing is stored, the log says why', async () => {
    await stopFill(pi);
    pi = await startFill({ maxSize: 1000 });
    const p = upstream.add('big', 50_000, { compression: 'none' });
    const info = parseNarInfo((await get(`${p.storeHash}.narinfo`)).text);
    expect((await get(info.url)).body.equals(p.file)).toBe(true);
    expect(existsSync(join(pi.cache, info.url))).toBe(false);
    expect(existsSync(join(pi.cache, `${p.storeHash}.narinfo`))).toBe(false);
    expect(pi.stats.notStored).toBe(1);
    expect(pi.logs.find((l) => l.event === 'fill-not-stored')?.reason).toMatch(/max-size/);
  });
});

describe('fill: upstream down, bad input', () => {
  it('upstream down: misses get a 404, and once its circuit is open without asking it', async () => {
    upstream.failWith = 503;
    const h = randomStoreHash();
    expect((await get(`${h}.narinfo`)).status).toBe(404);
    const asked = upstream.requests.length;
    const started = performance.now();
    expect((await get(`${randomStoreHash()}.narinfo`)).status).toBe(404);
    expect(performance.now() - started).toBeLessThan(500);
    expect(upstream.requests.length).toBe(asked);
    expect(pi.stats.narinfoUnavailable).toBe(2);
  });

  it('upstream refusing connections: a quick 404', async () => {
    await stopFill(pi);
    pi = await startFill({ upstreamUrl: 'http://127.0.0.1:1/' });
    const started = performance.now();
    expect((await get(`${randomStoreHash()}.narinfo`)).status).toBe(404);
    expect(performance.now() - started).toBeLessThan(1500);
  });

  it('path traversal, bad hashes and unknown NARs get a clear 4xx', async () => {
    const cases: Array<[string, number, string]> = [
      ['/nar/..%2f..%2fetc%2fpasswd', 400, 'BAD_PATH'],
      ['/nar/../../etc/passwd', 400, 'BAD_PATH'],
      ['/%2e%2e/etc/passwd', 400, 'BAD_PATH'],
      ['/nar/%2e%2e', 400, 'BAD_PATH'],
      ['/not-a-hash.narinfo', 400, 'BAD_HASH'],
      ['/nar/xyz.nar.xz', 400, 'BAD_PATH'],
      [`/nar/${'0'.repeat(52)}.nar.xz`, 404, 'NOT_FOUND'],
      ['/roots/pi', 404, 'NOT_FOUND'],
      [`/${'a'.repeat(2000)}`, 414, 'URI_TOO_LONG'],
    ];
    for (const [path, status, code] of cases) {
      // node:http sends the path as written (fetch and undici would normalise the dot segments away).
      const res = await rawGet(path);
      expect([path, res.status, (JSON.parse(res.body) as { error: string }).error]).toEqual([path, status, code]);
    }
    expect(upstream.requests).toEqual([]);
  });

  it('GET /_/stats and /metrics report what was filled', async () => {
    const p = upstream.add('x', 5_000);
    const info = parseNarInfo((await get(`${p.storeHash}.narinfo`)).text);
    await get(info.url);
    await published(p);
    const stats = (await pi.app.inject({ method: 'GET', url: '/_/stats' })).json();
    expect(stats).toMatchObject({ pathsFilled: 1, narDownloads: 1, bytesFromUpstream: p.file.length, hashFailures: 0 });
    const metrics = (await pi.app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(metrics).toContain(`nix_lan_cache_fill_upstream_bytes_total ${p.file.length}`);
    expect(metrics).toContain('nix_lan_cache_fill_paths_total 1');
  });
});
