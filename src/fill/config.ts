import { readFileSync } from 'node:fs';
import type { LevelWithSilent } from 'pino';
import {
  CACHE_NIXOS_ORG,
  CACHE_NIXOS_ORG_KEY,
  checkCacheUrls,
  checkLogLevel,
  checkPublicKeys,
  object,
  parseJsonConfig,
  parseListen,
  readConfigText,
  str,
  strList,
  timeoutsShape,
  type Checker,
} from '../config.js';
import { ConfigError } from '../errors.js';
import { parseSize } from '../format.js';
import { DEFAULT_TIMEOUTS, type OriginTimeouts } from '../origins/timeouts.js';

export const DEFAULT_FILL_PORT = 37516;

export interface FillConfig {
  /** The static cache directory nginx serves and fill publishes into, or a bucket (s3://…). */
  cache: string;
  /** With a bucket: where downloads are written before they are uploaded. */
  spoolDir?: string;
  listen: { host: string; port: number };
  /** Asked in order on a miss. */
  upstream: string[];
  /** Always includes cache.nixos.org's key; the config file and flags add more. */
  trustedPublicKeys: string[];
  /** Above this many bytes in the cache, fill still serves misses but stores nothing (gc --max-size brings it back under). */
  maxSize: number | undefined;
  logLevel: LevelWithSilent;
  timeouts: OriginTimeouts;
}

export interface FillFlags {
  cache?: string;
  'spool-dir'?: string;
  listen?: string;
  upstream?: string[];
  'trusted-public-key'?: string[];
  'max-size'?: string;
  config?: string;
  'log-level'?: string;
  help?: boolean;
}

const size: Checker = (v, where) => {
  const n = typeof v === 'number' && Number.isSafeInteger(v) && v > 0 ? v : typeof v === 'string' ? parseSize(v) : undefined;
  if (!n) throw new ConfigError(`${where} must be a size such as "20G" or a number of bytes, got ${JSON.stringify(v)}`);
  return n;
};

const fileShape = object({
  cache: str,
  spoolDir: str,
  listen: str,
  upstream: strList,
  trustedPublicKeys: strList,
  maxSize: size,
  logLevel: str,
  timeouts: timeoutsShape,
});

type FillFile = Partial<{ cache: string; spoolDir: string; listen: string; upstream: string[]; trustedPublicKeys: string[]; maxSize: number; logLevel: string; timeouts: Partial<OriginTimeouts> }>;

/** Defaults < config file < flags, validated once; unknown config keys are named. */
export function resolveFillConfig(flags: FillFlags, readFile: (p: string) => string = (p) => readFileSync(p, 'utf8')): FillConfig {
  const file = (flags.config ? fileShape(parseJsonConfig(readConfigText(flags.config, readFile), flags.config), flags.config) : {}) as FillFile;
  const cache = flags.cache ?? file.cache;
  if (!cache) throw new ConfigError('fill: --cache DIR is required (or "cache" in the config file)');
  const config: FillConfig = {
    cache,
    listen: parseListen(flags.listen ?? file.listen ?? `127.0.0.1:${DEFAULT_FILL_PORT}`),
    upstream: flags.upstream ?? file.upstream ?? [CACHE_NIXOS_ORG],
    trustedPublicKeys: [...new Set([CACHE_NIXOS_ORG_KEY, ...(file.trustedPublicKeys ?? []), ...(flags['trusted-public-key'] ?? [])])],
    maxSize: flags['max-size'] !== undefined ? (size(flags['max-size'], '--max-size') as number) : file.maxSize,
    logLevel: checkLogLevel(flags['log-level'] ?? file.logLevel ?? 'info'),
    timeouts: { ...DEFAULT_TIMEOUTS.upstream, ...file.timeouts },
  };
  const spoolDir = flags['spool-dir'] ?? file.spoolDir;
  if (spoolDir !== undefined) config.spoolDir = spoolDir;
  if (config.upstream.length === 0) throw new ConfigError('fill: at least one upstream is needed');
  checkCacheUrls('--cache', /^s3:\/\//i.test(cache) ? [cache] : []);
  checkCacheUrls('--upstream', config.upstream);
  checkPublicKeys(config.trustedPublicKeys);
  return config;
}
