import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { request } from 'undici';
import { HttpOrigin } from '../../src/origins/http-origin.js';
import { OriginSet } from '../../src/origins/origin-set.js';
import type { OriginTimeouts } from '../../src/origins/timeouts.js';
import { TrustedKeys } from '../../src/protocol/signing.js';
import { Quarantine } from '../../src/nar/quarantine.js';
import type { SlowRule } from '../../src/nar/rate-watch.js';
import type { NarPrefetchOptions } from '../../src/nar/nar-prefetch.js';
import type { HealthResponse } from '../../src/api.js';
import { buildApp } from '../../src/server/app.js';
import { NarInfoResolver } from '../../src/server/narinfo-resolver.js';
import { Stats } from '../../src/stats/recorder.js';
import { startFakeCache, behave, type Behaviour, type FakeCache } from '../helpers/fake-cache.js';
import { compress, memoryKey, narFixture, narinfoFor, type Compression, type NarFixture } from '../helpers/nar-fixtures.js';

const LAN: OriginTimeouts = { connectMs: 1000, firstByteMs: 2000, bodyIdleMs: 1500, probeIntervalMs: 60_000, maxFails: 1, hedgeMs: 0 };
const UP: OriginTimeouts = { connectMs: 2000, firstByteMs: 5000, bodyIdleMs: 5000, probeIntervalMs: 60_000, maxFails: 2, hedgeMs: 0 };

/** One cache in a scenario: its fake server and the NAR file it holds for the fixture. */
export interface CacheSide {
  server: FakeCache;
  file: Buffer;
  url: string;
  /** Serve the fixture's NAR file with this behaviour from now on. */
  nar(behaviour: Behaviour, body?: Buffer): void;
}

/** One cache of a house: its fake server and, per path, its NAR file. */
export interface Cache {
  server: FakeCache;
  /** The path's side of this cache (its file, URL and behaviour). */
  of(f: NarFixture): CacheSide;
  /** Serve this path's NAR file with `behaviour` from now on (the file itself unless `body`). */
  nar(f: NarFixture, behaviour: Behaviour, body?: Buffer): void;
  /** Requests for this path's NAR file so far. */
  narRequests(f: NarFixture): number;
}

export interface ScenarioOptions {
  size?: number;
  piCompression?: Compression;
  upstreamCompression?: Compression;
  /** Change unsigned fields of the Pi's narinfo (a LAN cache that rewrites them). */
  piNarinfo?: Parameters<typeof narinfoFor>[4];
  slowRule?: SlowRule;
  lanTimeouts?: Partial<OriginTimeouts>;
  /** No upstream origin at all. */
  noUpstream?: boolean;
  /** What the "Pi" is to the proxy: a LAN cache (default), or another machine's share (a peer). */
  piKind?: 'lan' | 'peer';
  /**
   * Hold a LAN cache's NAR back until verified (nar/nar-hold.ts): in memory
   * within `memoryBytes` (the NAR prefetch budget; prefetch itself stays off
   * unless `narPrefetch`), then in `spoolDir`. Off when absent.
   */
  hold?: { memoryBytes: number; spoolDir?: string; spoolBytes?: number; maxHoldMs?: number };
}

export interface HouseOptions extends ScenarioOptions {
  /** Store paths, each `size` bytes (default 1). */
  count?: number;
  /** NAR prefetch on, with these options over the test defaults; off when absent. */
  narPrefetch?: Partial<NarPrefetchOptions>;
  lanNarHeadMs?: number;
}

async function cacheOf(fixtures: NarFixture[], compression: Compression, key: ReturnType<typeof memoryKey>, override: ScenarioOptions['piNarinfo'] = {}): Promise<Cache> {
  const server = await startFakeCache();
  const sides = new Map<string, CacheSide>();
  for (const f of fixtures) {
    const file = compress(f.nar, compression);
    const { text, url } = narinfoFor(f, file, compression, key, override);
    server.files.set(`${f.storeHash}.narinfo`, { body: Buffer.from(text), behaviour: behave.ok() });
    const side: CacheSide = {
      server,
      file,
      url,
      nar(behaviour, body = file) {
        server.files.set(url, { body, behaviour });
      },
    };
    side.nar(behave.ok());
    sides.set(f.storeHash, side);
  }
  const of = (f: NarFixture) => sides.get(f.storeHash)!;
  return {
    server,
    of,
    nar: (f, behaviour, body) => of(f).nar(behaviour, body),
    narRequests: (f) => server.requests.filter((r) => r.url === of(f).url).length,
  };
}

/** The proxy (buildApp, not the CLI) in front of a fake Pi and upstream that both hold the house's paths. */
export interface House {
  paths: NarFixture[];
  pi: Cache;
  upstream: Cache;
  app: FastifyInstance;
  stats: Stats;
  quarantine: Quarantine;
  origins: OriginSet;
  logs: Array<Record<string, unknown>>;
  /** Nix asks for a path's narinfo: the text it gets (throws unless 200). */
  narinfo(f: NarFixture): Promise<string>;
  health(): Promise<HealthResponse>;
  /** The proxy listening on 127.0.0.1 (for clients that hang up mid-stream). */
  listen(): Promise<string>;
  close(): Promise<void>;
}

/** `count` paths on a fake Pi (xz by default) and a fake upstream (zstd), both signed and trusted, behind the proxy. */
export async function house(options: HouseOptions = {}): Promise<House> {
  const paths = Array.from({ length: options.count ?? 1 }, (_, i) => narFixture(options.size ?? 300_000, options.count === undefined ? 'fixture' : `p${i}`));
  const piKey = memoryKey('pi.lan-1');
  const upKey = memoryKey('upstream-1');
  const pi = await cacheOf(paths, options.piCompression ?? 'xz', piKey, options.piNarinfo);
  const upstream = await cacheOf(paths, options.upstreamCompression ?? 'zstd', upKey);
  const logs: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
  const trusted = new TrustedKeys([piKey.publicKey, upKey.publicKey]);
  const origins = new OriginSet([new HttpOrigin({ url: pi.server.url, kind: options.piKind ?? 'lan', name: 'pi', priority: 10, timeouts: { ...LAN, ...options.lanTimeouts }, trusted, log })]);
  if (!options.noUpstream) origins.add(new HttpOrigin({ url: upstream.server.url, kind: 'upstream', name: 'upstream', timeouts: UP, trusted, log }));
  const stats = new Stats((name) => origins.ordered().find((o) => o.name === name)?.kind);
  stats.attachOrigins(origins);
  const resolver = new NarInfoResolver(origins, { maxEntries: 1000, hitTtlSeconds: 60, missTtlSeconds: 0, hedgeMs: { lan: 0, peer: 0, upstream: 0 } }, stats, log);
  const quarantine = new Quarantine();
  const narPrefetch = options.narPrefetch
    ? { budgetBytes: 32 * 1024 * 1024, concurrency: 4, idleMs: 30_000, maxQueued: 1024, ...options.narPrefetch }
    : options.hold
      ? { budgetBytes: options.hold.memoryBytes, concurrency: 0, idleMs: 30_000, maxQueued: 1024 }
      : undefined;
  const narHold = options.hold ? { spoolDir: options.hold.spoolDir, spoolBytes: options.hold.spoolBytes ?? 1024 ** 3, ...(options.hold.maxHoldMs !== undefined ? { maxHoldMs: options.hold.maxHoldMs } : {}) } : undefined;
  const app = buildApp({
    config: { priority: 30, lan: [], upstream: [], trustedPublicKeys: [] },
    origins,
    resolver,
    stats,
    log,
    quarantine,
    ...(options.slowRule ? { slowRule: options.slowRule } : {}),
    ...(narPrefetch ? { narPrefetch } : {}),
    ...(narHold ? { narHold } : {}),
    ...(options.lanNarHeadMs !== undefined ? { lanNarHeadMs: options.lanNarHeadMs } : {}),
  });
  return {
    paths,
    pi,
    upstream,
    app,
    stats,
    quarantine,
    origins,
    logs,
    async narinfo(f) {
      const res = await app.inject({ method: 'GET', url: `/${f.storeHash}.narinfo` });
      if (res.statusCode !== 200) throw new Error(`narinfo: ${res.statusCode} ${res.body}`);
      return res.body;
    },
    async health() {
      return (await app.inject({ method: 'GET', url: '/_/health' })).json<HealthResponse>();
    },
    async listen() {
      return app.listen({ host: '127.0.0.1', port: 0 });
    },
    async close() {
      await app.close();
      await origins.close();
      await Promise.all([pi.server.close(), upstream.server.close()]);
    },
  };
}

export interface Scenario {
  fixture: NarFixture;
  pi: CacheSide;
  upstream: CacheSide;
  app: FastifyInstance;
  stats: Stats;
  quarantine: Quarantine;
  origins: OriginSet;
  logs: Array<Record<string, unknown>>;
  health(): Promise<HealthResponse>;
  /** The proxy's served narinfo for the fixture, as Nix would get it. */
  narinfo(): Promise<string>;
  narUrl(): string;
  /** The proxy listening on 127.0.0.1 (for clients that hang up mid-stream). */
  listen(): Promise<string>;
  close(): Promise<void>;
}

/** A house of one path (the fixture), NAR prefetch off: the proxy in front of a fake Pi (xz by default) and a fake upstream (zstd). */
export async function scenario(options: ScenarioOptions = {}): Promise<Scenario> {
  const h = await house(options);
  const fixture = h.paths[0]!;
  let narUrl: string | undefined;
  return {
    fixture,
    pi: h.pi.of(fixture),
    upstream: h.upstream.of(fixture),
    app: h.app,
    stats: h.stats,
    quarantine: h.quarantine,
    origins: h.origins,
    logs: h.logs,
    async narinfo() {
      const text = await h.narinfo(fixture);
      narUrl = /^URL: (.*)$/m.exec(text)![1]!;
      return text;
    },
    narUrl() {
      if (!narUrl) throw new Error('ask for the narinfo first');
      return `/${narUrl}`;
    },
    listen: () => h.listen(),
    health: () => h.health(),
    close: () => h.close(),
  };
}

/** GET through a real socket, reading the whole body; `error` when the proxy aborted the response. */
export async function fetchNar(base: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, unknown>; body: Buffer; error?: string }> {
  const res = await request(new URL(path, base), { headers, headersTimeout: 30_000, bodyTimeout: 30_000 });
  const chunks: Buffer[] = [];
  try {
    for await (const c of res.body) chunks.push(c as Buffer);
  } catch (err) {
    return { status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks), error: String(err) };
  }
  return { status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) };
}
