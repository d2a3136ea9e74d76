import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { request } from 'undici';
import { HttpOrigin } from '../../src/origins/http-origin.js';
import { OriginSet } from '../../src/origins/origin-set.js';
import type { OriginTimeouts } from '../../src/origins/timeouts.js';
import { TrustedKeys } from '../../src/protocol/signing.js';
import { Quarantine } from '../../src/nar/quarantine.js';
import type { SlowRule } from '../../src/nar/rate-watch.js';
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

export interface Scenario {
  fixture: NarFixture;
  pi: CacheSide;
  upstream: CacheSide;
  app: FastifyInstance;
  stats: Stats;
  quarantine: Quarantine;
  origins: OriginSet;
  logs: Array<Record<string, unknown>>;
  /** The proxy's served narinfo for the fixture, as Nix would get it. */
  narinfo(): Promise<string>;
  narUrl(): string;
  /** The proxy listening on 127.0.0.1 (for clients that hang up mid-stream). */
  listen(): Promise<string>;
  close(): Promise<void>;
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
}

async function side(fixture: NarFixture, compression: Compression, key: ReturnType<typeof memoryKey>, override: ScenarioOptions['piNarinfo'] = {}): Promise<CacheSide> {
  const server = await startFakeCache();
  const file = compress(fixture.nar, compression);
  const { text, url } = narinfoFor(fixture, file, compression, key, override);
  server.files.set(`${fixture.storeHash}.narinfo`, { body: Buffer.from(text), behaviour: behave.ok() });
  const s: CacheSide = {
    server,
    file,
    url,
    nar(behaviour, body = file) {
      server.files.set(url, { body, behaviour });
    },
  };
  s.nar(behave.ok());
  return s;
}

/** The proxy (buildApp, not the CLI) in front of a fake Pi (xz by default) and a fake upstream (zstd), both signed and trusted. */
export async function scenario(options: ScenarioOptions = {}): Promise<Scenario> {
  const fixture = narFixture(options.size ?? 300_000);
  const piKey = memoryKey('pi.lan-1');
  const upKey = memoryKey('upstream-1');
  const pi = await side(fixture, options.piCompression ?? 'xz', piKey, options.piNarinfo);
  const upstream = await side(fixture, options.upstreamCompression ?? 'zstd', upKey);
  const logs: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
  const trusted = new TrustedKeys([piKey.publicKey, upKey.publicKey]);
  const origins = new OriginSet([new HttpOrigin({ url: pi.server.url, kind: 'lan', name: 'pi', priority: 10, timeouts: { ...LAN, ...options.lanTimeouts }, trusted, log })]);
  if (!options.noUpstream) origins.add(new HttpOrigin({ url: upstream.server.url, kind: 'upstream', name: 'upstream', timeouts: UP, trusted, log }));
  const stats = new Stats((name) => origins.ordered().find((o) => o.name === name)?.kind);
  stats.attachOrigins(origins);
  const resolver = new NarInfoResolver(origins, { maxEntries: 100, hitTtlSeconds: 60, missTtlSeconds: 0, hedgeMs: { lan: 0, upstream: 0 } }, stats, log);
  const quarantine = new Quarantine();
  const app = buildApp({ config: { priority: 30, lan: [], upstream: [], trustedPublicKeys: [] }, origins, resolver, stats, log, quarantine, ...(options.slowRule ? { slowRule: options.slowRule } : {}) });
  let narUrl: string | undefined;
  const s: Scenario = {
    fixture,
    pi,
    upstream,
    app,
    stats,
    quarantine,
    origins,
    logs,
    async narinfo() {
      const res = await app.inject({ method: 'GET', url: `/${fixture.storeHash}.narinfo` });
      if (res.statusCode !== 200) throw new Error(`narinfo: ${res.statusCode} ${res.body}`);
      narUrl = /^URL: (.*)$/m.exec(res.body)![1]!;
      return res.body;
    },
    narUrl() {
      if (!narUrl) throw new Error('ask for the narinfo first');
      return `/${narUrl}`;
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
  return s;
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
