import { Agent, request } from './undici.js';
import type { Logger } from 'pino';
import { errorMessage } from '../errors.js';
import { NarInfoError, parseNarInfo } from '../protocol/narinfo.js';
import { sigKeyName as keyName, type TrustedKeys } from '../protocol/signing.js';
import { drainable, drop } from './body.js';
import { collect } from './collect.js';
import { Breaker } from './breaker.js';
import { checkCacheInfo } from './cache-info.js';
import { normaliseBaseUrl, originId } from './base-url.js';
import type { BodyFetch, BodyFetchOptions, FetchOptions, Fetched, FileFetch, NarInfoLookup, Origin, OriginKind } from './origin.js';
import type { OriginTimeouts } from './timeouts.js';
import type { RequestSigner } from '../s3/signer.js';

const MAX_NARINFO_BYTES = 1 << 20;
const ABSENT_STATUSES = new Set([403, 404, 410]);
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
/** Redirects followed per request; each must stay on the origin's host and under its base path. */
const MAX_REDIRECTS = 3;
/** How long closing an origin waits for its requests in flight before it destroys their connections. */
const CLOSE_GRACE_MS = 2000;

export interface HttpOriginOptions {
  url: string;
  kind: OriginKind;
  name?: string;
  priority?: number;
  timeouts: OriginTimeouts;
  trusted: TrustedKeys;
  /** Only signatures by these key names count (a discovered cache must sign with the key(s) it announced). */
  requireKeyName?: string | readonly string[];
  /** A LAN cache that fills itself from upstream (Origin.fills). */
  fills?: boolean;
  /**
   * Signs every request (an S3 bucket: origins/s3-origin.ts). A signed
   * origin's 403 is a failure (credentials or policy), not "absent".
   */
  signer?: RequestSigner;
  log: Logger;
}

type Headers = Record<string, string | string[] | undefined>;
/** A response head and its body (streamed or collected), and how to throw the body away. */
type Exchanged<B> = { statusCode: number; headers: Headers; body: B; drop(): void };

/** A binary cache reached over HTTP: a static LAN cache (the Pi) or an upstream. */
export class HttpOrigin implements Origin {
  readonly id: string;
  readonly name: string;
  readonly kind: OriginKind;
  readonly baseUrl: string;
  readonly priority: number;
  readonly fills: boolean;
  readonly breaker: Breaker;
  private readonly base: URL;
  private readonly agent: Agent;
  private readonly log: Logger;

  constructor(private readonly options: HttpOriginOptions) {
    this.baseUrl = normaliseBaseUrl(options.url);
    this.base = new URL(this.baseUrl);
    this.id = originId(this.baseUrl);
    this.kind = options.kind;
    this.name = options.name ?? this.base.host;
    this.priority = options.priority ?? 50;
    this.fills = options.fills ?? false;
    this.log = options.log.child({ origin: this.name });
    const t = options.timeouts;
    this.agent = new Agent({
      connect: { timeout: t.connectMs },
      headersTimeout: t.firstByteMs,
      bodyTimeout: t.bodyIdleMs,
      keepAliveTimeout: 10_000,
      connections: 64,
    });
    this.breaker = new Breaker({ maxFails: t.maxFails, probeIntervalMs: t.probeIntervalMs }, () => this.probe());
    this.breaker.on('change', (state, reason) => {
      this.log.info({ event: 'origin-state', state, reason }, `origin ${this.name} is ${state === 'open' ? 'down' : 'up'}: ${reason}`);
    });
  }

  /** Resolves a path under the origin's root; refuses anything that would leave it. */
  resolve(path: string): URL | undefined {
    return this.underBase(path, this.base);
  }

  /**
   * `ref` resolved against `from`, if it stays on this origin (scheme, host,
   * port) and under its base path, also as the server will read it: no
   * encoded slash or backslash (`..%2f` is `../` to nginx), no dot segment
   * once decoded, no malformed percent-encoding.
   */
  private underBase(ref: string, from: URL): URL | undefined {
    let url: URL;
    try {
      url = new URL(ref, from);
    } catch {
      return undefined;
    }
    if (url.origin !== this.base.origin || !url.pathname.startsWith(this.base.pathname)) return undefined;
    const rest = url.pathname.slice(this.base.pathname.length);
    if (/%(2f|5c)/i.test(rest) || rest.includes('\\')) return undefined;
    let decoded: string;
    try {
      decoded = decodeURIComponent(rest);
    } catch {
      return undefined;
    }
    if (decoded.split('/').some((seg) => seg === '.' || seg === '..')) return undefined;
    return url;
  }

  async lookupNarInfo(storeHash: string): Promise<NarInfoLookup> {
    const res = await this.fetchBody(`${storeHash}.narinfo`, { limit: MAX_NARINFO_BYTES });
    if (res.status !== 'present') {
      return res.status === 'absent' ? { status: 'absent', reason: 'not-found' } : res;
    }
    let text: string;
    try {
      const pieces = await res.body.whole;
      text = (pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces)).toString('utf8');
    } catch (err) {
      const reason = `reading narinfo failed: ${errorMessage(err)}`;
      this.reportFailure(reason);
      return { status: 'unknown', cause: isTimeout(err) ? 'timeout' : 'unreachable', reason };
    }
    try {
      const info = parseNarInfo(text);
      if (info.path.hash !== storeHash) throw new NarInfoError(`narinfo for ${storeHash} describes ${info.storePath}`);
      // Only the signatures this origin may sign with are checked: a Pi's narinfo that also carries
      // cache.nixos.org's signature (push keeps it) counts by the Pi's key, whichever comes first.
      const sigs = info.sigs.filter((sig) => this.accepts(keyName(sig)));
      const trustedBy = sigs.length ? await this.options.trusted.verifyAsync({ ...info, sigs }) : undefined;
      if (!trustedBy) {
        this.log.warn(
          { event: 'untrusted-narinfo', storePath: info.storePath, sigs: info.sigs.map(keyName) },
          'narinfo has no signature by a trusted key; treating it as absent',
        );
        return { status: 'absent', reason: 'untrusted', forged: sigs.length > 0 };
      }
      return { status: 'present', info, trustedBy };
    } catch (err) {
      this.log.warn({ event: 'invalid-narinfo', storeHash, err: errorMessage(err) }, 'origin served an invalid narinfo');
      return { status: 'absent', reason: 'invalid' };
    }
  }

  /** Whether a signature by this key name counts here: a trusted key, and one this origin may sign with. */
  private accepts(name: string): boolean {
    const required = this.options.requireKeyName;
    if (!this.options.trusted.has(name)) return false;
    return required === undefined || (typeof required === 'string' ? required === name : required.includes(name));
  }

  async fetchFile(path: string, options: FetchOptions = {}): Promise<FileFetch> {
    return this.exchange(path, options, (url, headers) =>
      request(this.agent, { origin: url.origin, path: url.pathname + url.search, method: options.method ?? 'GET', headers, signal: options.signal }).then((res) => ({
        statusCode: res.statusCode,
        headers: res.headers,
        body: res.body,
        drop: () => drop(res.body, res.headers),
      })),
    );
  }

  async fetchBody(path: string, options: BodyFetchOptions): Promise<BodyFetch> {
    return this.exchange(path, options, (url, headers) =>
      collect(this.agent, { origin: url.origin, path: url.pathname + url.search, method: 'GET', headers }, options.limit, options.signal, () => this.reportProgress()).then((res) => ({
        statusCode: res.statusCode,
        headers: res.headers,
        body: res.body,
        drop: () => res.drop(drainable(res.headers)),
      })),
    );
  }

  /**
   * One request for a file under the base URL, following redirects that stay
   * under it, with the breaker told what happened; `send` makes the request
   * (a streamed or a collected body) with the headers given (signed for S3).
   */
  private async exchange<B>(path: string, options: FetchOptions, send: (url: URL, headers: Record<string, string>) => Promise<Exchanged<B>>): Promise<Fetched<B>> {
    if (this.breaker.isOpen && !options.evenIfOpen) return { status: 'unknown', cause: 'circuit-open', reason: 'circuit open' };
    const resolved = this.resolve(path);
    if (!resolved) {
      this.log.warn({ event: 'path-refused', path: path.slice(0, 300) }, "not fetching a path outside the origin's base URL");
      return { status: 'absent', statusCode: 400 };
    }
    let url: URL = resolved;
    const headers: Record<string, string> = { 'user-agent': 'nix-lan-cache' };
    if (options.range) headers.range = options.range;
    let res: Exchanged<B>;
    const method = options.method ?? 'GET';
    for (let redirects = 0; ; redirects++) {
      try {
        res = await send(url, this.options.signer ? await this.options.signer({ method, url, headers }) : headers);
      } catch (err) {
        if (options.signal?.aborted) return { status: 'unknown', cause: 'aborted', reason: 'client went away' };
        const reason = errorMessage(err);
        // Silence (a blackholed network, a captive portal before login) is waited on once, not maxFails times.
        const timedOut = isTimeout(err);
        if (timedOut) this.breaker.trip(reason);
        else this.breaker.failure(reason);
        return { status: 'unknown', cause: timedOut ? 'timeout' : 'unreachable', reason };
      }
      if (!REDIRECT_STATUSES.has(res.statusCode)) break;
      // A redirect is followed only on this origin and under its base path, a few times: never to another
      // host (a LAN cache must not make us call the laptop's loopback, link-local or any other address).
      res.drop();
      this.breaker.success();
      const location = res.headers.location;
      const next: URL | undefined = typeof location === 'string' && redirects < MAX_REDIRECTS ? this.underBase(location, url) : undefined;
      if (!next) {
        const why = redirects >= MAX_REDIRECTS ? `more than ${MAX_REDIRECTS} redirects` : 'a redirect that leaves the origin or its base path';
        this.log.warn({ event: 'redirect-refused', path, from: url.href, location: typeof location === 'string' ? location.slice(0, 300) : undefined, status: res.statusCode }, `not following ${why}`);
        return { status: 'absent', statusCode: res.statusCode };
      }
      url = next;
    }
    if (res.statusCode >= 200 && res.statusCode < 300) {
      this.breaker.success();
      return { status: 'present', statusCode: res.statusCode, headers: res.headers, body: res.body };
    }
    res.drop(); // drained if small, so the connection is reused
    const refused = res.statusCode === 403 && this.options.signer !== undefined;
    if ((ABSENT_STATUSES.has(res.statusCode) && !refused) || res.statusCode === 416) {
      this.breaker.success();
      return { status: 'absent', statusCode: res.statusCode };
    }
    const reason = refused ? 'HTTP 403: the bucket refused our signed request (credentials, region or bucket policy)' : `HTTP ${res.statusCode}`;
    if (refused) this.breaker.failure(reason);
    if (res.statusCode >= 500) this.breaker.failure(reason);
    return { status: 'unknown', cause: 'server-error', reason };
  }

  reportFailure(reason: string): void {
    this.breaker.failure(reason);
  }

  reportProgress(): void {
    this.breaker.heard();
  }

  /** The background probe: the cache's `nix-cache-info` answers for /nix/store. */
  private async probe(): Promise<boolean> {
    return (await checkCacheInfo(this.baseUrl, this.options.timeouts, this.agent, this.options.signer)) === undefined;
  }

  /** Lets requests in flight finish for a moment, then destroys what is left: a wedged connection never holds up a stop. */
  async close(): Promise<void> {
    this.breaker.close();
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), CLOSE_GRACE_MS)));
    const closed = await Promise.race([this.agent.close().then(() => 'closed' as const, () => 'failed' as const), late]);
    clearTimeout(timer);
    if (closed !== 'closed') await this.agent.destroy().catch(() => {});
  }
}

/** undici's own codes for an origin that stayed silent (connecting, before the headers, or mid-body). */
function isTimeout(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT';
}
