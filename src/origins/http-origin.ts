import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { Agent, interceptors, type Dispatcher } from 'undici';
import type { Logger } from 'pino';
import { errorMessage } from '../errors.js';
import { NarInfoError, parseNarInfo } from '../protocol/narinfo.js';
import type { TrustedKeys } from '../protocol/signing.js';
import { Breaker } from './breaker.js';
import { checkCacheInfo } from './cache-info.js';
import type { FetchOptions, FileFetch, NarInfoLookup, Origin, OriginKind } from './origin.js';
import type { OriginTimeouts } from './timeouts.js';

const MAX_NARINFO_BYTES = 1 << 20;
const ABSENT_STATUSES = new Set([403, 404, 410]);

export interface HttpOriginOptions {
  url: string;
  kind: OriginKind;
  name?: string;
  priority?: number;
  timeouts: OriginTimeouts;
  trusted: TrustedKeys;
  /** Only signatures by this key name count (a discovered cache must sign with the key it announced). */
  requireKeyName?: string;
  log: Logger;
}

export function normaliseBaseUrl(url: string): string {
  const parsed = new URL(url);
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new Error(`cache URL must be http or https: ${url}`);
  }
  parsed.search = '';
  parsed.hash = '';
  if (!parsed.pathname.endsWith('/')) parsed.pathname += '/';
  return parsed.toString();
}

export function originId(baseUrl: string): string {
  return createHash('sha256').update(baseUrl).digest('hex').slice(0, 10);
}

/** A binary cache reached over HTTP: a static LAN cache (the Pi) or an upstream. */
export class HttpOrigin implements Origin {
  readonly id: string;
  readonly name: string;
  readonly kind: OriginKind;
  readonly baseUrl: string;
  readonly priority: number;
  readonly breaker: Breaker;
  private readonly base: URL;
  private readonly dispatcher: Dispatcher;
  private readonly agent: Agent;
  private readonly log: Logger;

  constructor(private readonly options: HttpOriginOptions) {
    this.baseUrl = normaliseBaseUrl(options.url);
    this.base = new URL(this.baseUrl);
    this.id = originId(this.baseUrl);
    this.kind = options.kind;
    this.name = options.name ?? this.base.host;
    this.priority = options.priority ?? 50;
    this.log = options.log.child({ origin: this.name });
    const t = options.timeouts;
    this.agent = new Agent({
      connect: { timeout: t.connectMs },
      headersTimeout: t.firstByteMs,
      bodyTimeout: t.bodyIdleMs,
      keepAliveTimeout: 10_000,
      connections: 64,
    });
    this.dispatcher = this.agent.compose(interceptors.redirect({ maxRedirections: 3 }));
    this.breaker = new Breaker({ maxFails: t.maxFails, probeIntervalMs: t.probeIntervalMs }, () => this.probe());
    this.breaker.on('change', (state, reason) => {
      this.log.info({ event: 'origin-state', state, reason }, `origin ${this.name} is ${state === 'open' ? 'down' : 'up'}: ${reason}`);
    });
  }

  /** Resolves a path under the origin's root; refuses anything that would leave it. */
  resolve(path: string): URL | undefined {
    let url: URL;
    try {
      url = new URL(path, this.base);
    } catch {
      return undefined;
    }
    if (url.origin !== this.base.origin || !url.pathname.startsWith(this.base.pathname)) return undefined;
    return url;
  }

  async lookupNarInfo(storeHash: string): Promise<NarInfoLookup> {
    const res = await this.fetchFile(`${storeHash}.narinfo`);
    if (res.status !== 'present') {
      return res.status === 'absent' ? { status: 'absent', reason: 'not-found' } : res;
    }
    let text: string;
    try {
      text = await readBounded(res.body, MAX_NARINFO_BYTES);
    } catch (err) {
      const reason = `reading narinfo failed: ${errorMessage(err)}`;
      this.reportFailure(reason);
      return { status: 'unknown', reason };
    }
    try {
      const info = parseNarInfo(text);
      if (info.path.hash !== storeHash) throw new NarInfoError(`narinfo for ${storeHash} describes ${info.storePath}`);
      const trustedBy = this.options.trusted.verify(info);
      if (!trustedBy || (this.options.requireKeyName && trustedBy !== this.options.requireKeyName)) {
        this.log.warn(
          { event: 'untrusted-narinfo', storePath: info.storePath, sigs: info.sigs.map((s) => s.split(':')[0]) },
          'narinfo has no signature by a trusted key; treating it as absent',
        );
        return { status: 'absent', reason: 'untrusted' };
      }
      return { status: 'present', info, trustedBy };
    } catch (err) {
      this.log.warn({ event: 'invalid-narinfo', storeHash, err: errorMessage(err) }, 'origin served an invalid narinfo');
      return { status: 'absent', reason: 'invalid' };
    }
  }

  async fetchFile(path: string, options: FetchOptions = {}): Promise<FileFetch> {
    if (this.breaker.isOpen) return { status: 'unknown', reason: 'circuit open' };
    const url = this.resolve(path);
    if (!url) return { status: 'absent', statusCode: 400 };
    const headers: Record<string, string> = { 'user-agent': 'nix-lan-cache' };
    if (options.range) headers.range = options.range;
    let res: Dispatcher.ResponseData;
    try {
      res = await this.dispatcher.request({
        origin: url.origin,
        path: url.pathname + url.search,
        method: options.method ?? 'GET',
        headers,
        signal: options.signal,
      });
    } catch (err) {
      if (options.signal?.aborted) return { status: 'unknown', reason: 'client went away' };
      const reason = errorMessage(err);
      // Silence (a blackholed network, a captive portal before login) is waited on once, not maxFails times.
      if (isTimeout(err)) this.breaker.trip(reason);
      else this.breaker.failure(reason);
      return { status: 'unknown', reason };
    }
    if (res.statusCode >= 200 && res.statusCode < 300) {
      this.breaker.success();
      return { status: 'present', statusCode: res.statusCode, headers: res.headers, body: res.body };
    }
    res.body.resume(); // drain so the connection is reused
    if (ABSENT_STATUSES.has(res.statusCode) || res.statusCode === 416) {
      this.breaker.success();
      return { status: 'absent', statusCode: res.statusCode };
    }
    const reason = `HTTP ${res.statusCode}`;
    if (res.statusCode >= 500) this.breaker.failure(reason);
    return { status: 'unknown', reason };
  }

  reportFailure(reason: string): void {
    this.breaker.failure(reason);
  }

  /** The background probe: the cache's `nix-cache-info` answers for /nix/store. */
  private async probe(): Promise<boolean> {
    return (await checkCacheInfo(this.baseUrl, this.options.timeouts, this.agent)) === undefined;
  }

  async close(): Promise<void> {
    this.breaker.close();
    await this.agent.close().catch(() => this.agent.destroy());
  }
}

function isTimeout(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT';
}

async function readBounded(body: Readable, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) {
      body.destroy();
      throw new Error(`body larger than ${limit} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}
