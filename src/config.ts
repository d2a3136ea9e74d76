import { readFileSync } from 'node:fs';
import { resolve as resolvePath } from 'node:path';
import type { LevelWithSilent } from 'pino';
import { ConfigError, errorMessage } from './errors.js';
import { LOG_LEVELS } from './log.js';
import { normaliseBaseUrl } from './origins/base-url.js';
import type { PeerOrder } from './origins/origin-set.js';
import { formatS3Url, isS3Url, parseS3Url, redactS3Url } from './s3/url.js';
import { DEFAULT_TIMEOUTS, type OriginTimeouts } from './origins/timeouts.js';
import { parseCidr } from './protocol/cidr.js';
import { parsePublicKey } from './protocol/signing.js';
import { bool, int, object, oneOf, str, strList } from './config/checks.js';
import { defaultShare, PEER_ORDERS, peeringShape, shareShape, type ShareConfig } from './config/sharing.js';

export { DEFAULT_SHARE_PORT, type ShareConfig } from './config/sharing.js';
export const DEFAULT_PORT = 37515;
export const CACHE_NIXOS_ORG = 'https://cache.nixos.org';
export const CACHE_NIXOS_ORG_KEY = 'cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=';

export interface ServeConfig {
  listen: { host: string; port: number };
  /** Static LAN caches (the Pi), asked first. */
  lan: string[];
  /** Static LAN caches that fill themselves from upstream (`nix-lan-cache fill` behind nginx): asked first, without hedging. */
  lanFill: string[];
  /** Asked in order when no LAN cache has a path. */
  upstream: string[];
  /** Always includes cache.nixos.org's key; the config file and flags add more. */
  trustedPublicKeys: string[];
  mdns: boolean;
  logLevel: LevelWithSilent;
  /** The `Priority` in the proxy's own nix-cache-info. */
  priority: number;
  /** Where state that survives restarts lives (stats). */
  stateDir: string | undefined;
  timeouts: { lan: OriginTimeouts; lanFill: OriginTimeouts; peer: OriginTimeouts; upstream: OriginTimeouts };
  /** This machine's share of its own store with other machines (docs/sharing.md); off unless enabled. */
  share: ShareConfig;
  /** Other machines' shares to ask (besides those mDNS finds), and how (docs/sharing.md). */
  peer: string[];
  peering: { order: PeerOrder; fanout: number; missTtlSeconds: number };
  /**
   * prefetchConcurrency: narinfo lookups ahead of Nix at once (0: off); prefetchDepth: levels of references;
   * narPrefetchBytes: decompressed NAR bytes held in memory, fetched ahead of Nix or held back until verified (0: NAR prefetch off, holds only spooled);
   * narPrefetchConcurrency: NAR fetches ahead at once;
   * spoolDir: where a NAR held back until verified goes when it does not fit in memory ('': nowhere, such NARs are streamed; unset: $CACHE_DIRECTORY/spool,
   * else $XDG_CACHE_HOME or ~/.cache, /nix-lan-cache/spool); spoolBytes: bytes spooled at once, at most;
   * holdMaxSeconds: a NAR held longer is sent and the rest streamed (0: NARs are never held back).
   */
  cache: { maxEntries: number; hitTtlSeconds: number; missTtlSeconds: number; prefetchConcurrency: number; prefetchDepth: number; narPrefetchBytes: number; narPrefetchConcurrency: number; spoolDir?: string; spoolBytes: number; holdMaxSeconds: number };
}

export function defaultConfig(): ServeConfig {
  return {
    listen: { host: '127.0.0.1', port: DEFAULT_PORT },
    lan: [],
    lanFill: [],
    upstream: [CACHE_NIXOS_ORG],
    trustedPublicKeys: [CACHE_NIXOS_ORG_KEY],
    mdns: true,
    logLevel: 'info',
    priority: 30,
    stateDir: undefined,
    timeouts: { lan: { ...DEFAULT_TIMEOUTS.lan }, lanFill: { ...DEFAULT_TIMEOUTS.lanFill }, peer: { ...DEFAULT_TIMEOUTS.peer }, upstream: { ...DEFAULT_TIMEOUTS.upstream } },
    // A whole NixOS system is a few thousand paths; Nix keeps its own 30-day narinfo cache on disk.
    cache: { maxEntries: 4096, hitTtlSeconds: 3600, missTtlSeconds: 30, prefetchConcurrency: 16, prefetchDepth: 1, narPrefetchBytes: 32 * 1024 * 1024, narPrefetchConcurrency: 8, spoolBytes: 4 * 1024 ** 3, holdMaxSeconds: 60 },
    share: defaultShare(),
    peer: [],
    peering: { order: 'before-upstream', fanout: 4, missTtlSeconds: 10 },
  };
}

export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new ConfigError(`listen must be HOST:PORT (e.g. 127.0.0.1:${DEFAULT_PORT} or [::1]:${DEFAULT_PORT}), got ${JSON.stringify(text)}`);
  return { host: (m[1] ?? m[2])!, port };
}

// ---- the config file: JSON, the same settings as the flags, camelCase ----

export { bool, int, object, oneOf, str, strList, type Checker } from './config/checks.js';

const timeoutKeys = {
  connectMs: int(1, 600_000),
  firstByteMs: int(1, 600_000),
  bodyIdleMs: int(1, 3_600_000),
  probeIntervalMs: int(100, 3_600_000),
  maxFails: int(1, 1000),
};
export const timeoutsShape = object({ ...timeoutKeys, hedgeMs: int(0, 600_000) });
/** A filling LAN cache is never hedged: `hedgeMs` is not one of its keys. */
const fillTimeoutsShape = object(timeoutKeys);
const fileShape = object({
  listen: str,
  lan: strList,
  lanFill: strList,
  upstream: strList,
  trustedPublicKeys: strList,
  mdns: bool,
  logLevel: str,
  priority: int(0, 1000),
  stateDir: str,
  timeouts: object({ lan: timeoutsShape, lanFill: fillTimeoutsShape, peer: timeoutsShape, upstream: timeoutsShape }),
  share: shareShape,
  peer: strList,
  peering: peeringShape,
  cache: object({
    maxEntries: int(1, 10_000_000),
    hitTtlSeconds: int(0, 30 * 86400),
    missTtlSeconds: int(0, 86400),
    prefetchConcurrency: int(0, 256),
    prefetchDepth: int(1, 4),
    narPrefetchBytes: int(0, 4 * 1024 * 1024 * 1024),
    narPrefetchConcurrency: int(1, 64),
    spoolDir: str,
    spoolBytes: int(0, 1024 ** 4),
    holdMaxSeconds: int(0, 240),
  }),
});

export type ConfigFile = Partial<{
  listen: string;
  lan: string[];
  lanFill: string[];
  upstream: string[];
  trustedPublicKeys: string[];
  mdns: boolean;
  logLevel: string;
  priority: number;
  stateDir: string;
  timeouts: Partial<Record<'lan' | 'lanFill' | 'peer' | 'upstream', Partial<OriginTimeouts>>>;
  cache: Partial<ServeConfig['cache']>;
  share: Partial<Omit<ShareConfig, 'listen'> & { listen: string }>;
  peer: string[];
  peering: Partial<ServeConfig['peering']>;
}>;

/** The text of a `--config FILE`, or a ConfigError that says why it cannot be read. */
export function readConfigText(path: string, readFile: (p: string) => string): string {
  try {
    return readFile(path);
  } catch (err) {
    throw new ConfigError(`cannot read config file: ${errorMessage(err)}`);
  }
}

/** JSON.parse with a ConfigError naming the file. */
export function parseJsonConfig(text: string, path: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${path}: not valid JSON: ${errorMessage(err)}`);
  }
}

export function parseConfigFile(text: string, path: string): ConfigFile {
  return fileShape(parseJsonConfig(text, path), path) as ConfigFile;
}

// ---- flags (parsed from argv by src/cli/serve-flags.ts) ----

export interface ServeFlags {
  listen?: string;
  lan?: string[];
  'lan-fill'?: string[];
  upstream?: string[];
  'trusted-public-key'?: string[];
  'no-mdns'?: boolean;
  mdns?: boolean;
  config?: string;
  'log-level'?: string;
  'state-dir'?: string;
  priority?: string;
  share?: boolean;
  'no-share'?: boolean;
  'share-listen'?: string;
  'share-store'?: string;
  'share-allow'?: string[];
  peer?: string[];
  'peer-order'?: string;
  help?: boolean;
}

/** Defaults < config file < flags, validated once. Keys from every layer are trusted together. */
export function resolveServeConfig(flags: ServeFlags, readFile: (p: string) => string = (p) => readFileSync(p, 'utf8')): ServeConfig {
  const config = defaultConfig();
  const file: ConfigFile = flags.config ? parseConfigFile(readConfigText(flags.config, readFile), flags.config) : {};

  const listen = flags.listen ?? file.listen;
  if (listen !== undefined) config.listen = parseListen(listen);
  config.lan = flags.lan ?? file.lan ?? config.lan;
  config.lanFill = flags['lan-fill'] ?? file.lanFill ?? config.lanFill;
  config.upstream = flags.upstream ?? file.upstream ?? config.upstream;
  config.trustedPublicKeys = [...new Set([...config.trustedPublicKeys, ...(file.trustedPublicKeys ?? []), ...(flags['trusted-public-key'] ?? [])])];
  if (file.mdns !== undefined) config.mdns = file.mdns;
  if (flags.mdns) config.mdns = true;
  if (flags['no-mdns']) config.mdns = false;
  const level = flags['log-level'] ?? file.logLevel;
  if (level !== undefined) config.logLevel = checkLogLevel(level);
  if (flags.priority !== undefined) {
    config.priority = int(0, 1000)(/^\d+$/.test(flags.priority) ? Number(flags.priority) : NaN, '--priority') as number;
  } else if (file.priority !== undefined) config.priority = file.priority;
  config.stateDir = flags['state-dir'] ?? file.stateDir ?? config.stateDir;
  for (const kind of ['lan', 'lanFill', 'peer', 'upstream'] as const) Object.assign(config.timeouts[kind], file.timeouts?.[kind]);
  Object.assign(config.cache, file.cache);
  if (config.cache.spoolDir && !config.cache.spoolDir.startsWith('/')) throw new ConfigError(`cache.spoolDir must be an absolute path (or "" for no spool), got ${JSON.stringify(config.cache.spoolDir)}`);
  resolveSharing(config, flags, file);

  checkCacheUrls('--lan', config.lan);
  checkCacheUrls('--lan-fill', config.lanFill);
  const both = config.lanFill.filter((u) => config.lan.some((l) => cacheUrlKey(l) === cacheUrlKey(u)));
  if (both.length) throw new ConfigError(`${both.map((u) => JSON.stringify(u)).join(', ')} given both as --lan and as --lan-fill: name a filling LAN cache once, with --lan-fill`);
  checkCacheUrls('--upstream', config.upstream);
  checkPublicKeys(config.trustedPublicKeys);
  return config;
}

export function checkLogLevel(level: string): LevelWithSilent {
  if (!(LOG_LEVELS as readonly string[]).includes(level)) throw new ConfigError(`log level must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(level)}`);
  return level as LevelWithSilent;
}

/** A cache URL in one canonical form: an http(s) base URL, or an S3 bucket in Nix's syntax. */
export function cacheUrlKey(url: string): string {
  return isS3Url(url) ? formatS3Url(parseS3Url(url)) : normaliseBaseUrl(url);
}

export function checkCacheUrls(what: string, urls: readonly string[]): void {
  for (const url of urls) {
    try {
      cacheUrlKey(url);
    } catch (err) {
      throw new ConfigError(`${what} ${JSON.stringify(isS3Url(url) ? redactS3Url(url) : url)}: ${errorMessage(err).replace(/^bad S3 cache URL "[^"]*": /, '')}`);
    }
  }
}

export function checkPublicKeys(keys: readonly string[]): void {
  for (const key of keys) {
    try {
      parsePublicKey(key);
    } catch (err) {
      throw new ConfigError(`trusted public key ${JSON.stringify(key)}: ${errorMessage(err)}`);
    }
  }
}

/** The share and peer settings (docs/sharing.md): defaults < config file < flags, checked. */
function resolveSharing(config: ServeConfig, flags: ServeFlags, file: ConfigFile): void {
  const { listen, ...share } = file.share ?? {};
  Object.assign(config.share, share);
  if (flags.share) config.share.enable = true;
  if (flags['no-share']) config.share.enable = false;
  const shareListen = flags['share-listen'] ?? listen;
  if (shareListen !== undefined) config.share.listen = parseListen(shareListen);
  if (config.share.listen.host === 'lan' && config.share.listen.port === 0) throw new ConfigError('--share-listen lan:PORT needs a fixed port (port 0 only with an address, e.g. 127.0.0.1:0)');
  config.share.store = resolvePath(flags['share-store'] ?? config.share.store);
  config.share.allow = flags['share-allow'] ?? config.share.allow;
  for (const net of config.share.allow) {
    try {
      parseCidr(net);
    } catch (err) {
      throw new ConfigError(`--share-allow: ${errorMessage(err)}`);
    }
  }
  config.peer = flags.peer ?? file.peer ?? config.peer;
  const bucket = config.peer.find(isS3Url);
  if (bucket !== undefined) throw new ConfigError(`--peer ${JSON.stringify(redactS3Url(bucket))}: a peer is another machine's share (http://HOST:PORT), not an S3 bucket (give a bucket with --lan or --upstream)`);
  checkCacheUrls('--peer', config.peer);
  Object.assign(config.peering, file.peering);
  if (flags['peer-order'] !== undefined) config.peering.order = oneOf(PEER_ORDERS)(flags['peer-order'], '--peer-order') as PeerOrder;
}
