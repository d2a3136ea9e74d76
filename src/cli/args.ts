import { stat } from 'node:fs/promises';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError, errorMessage } from '../errors.js';
import { LocalFiles } from '../push/cachefiles.js';
import type { CacheFiles } from '../push/files.js';
import { isS3Url, parseS3Url } from '../s3/url.js';

type ParseArgsOptionsConfig = NonNullable<ParseArgsConfig['options']>;

/** node:util parseArgs (strict), turning its errors into ConfigErrors that name the command. */
export function parseCommandArgs<const O extends ParseArgsOptionsConfig>(command: string, argv: string[], options: O, allowPositionals: boolean) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, strict: true, allowPositionals: true });
  } catch (err) {
    throw new ConfigError(`${command}: ${errorMessage(err).replace(/^ERR_PARSE_ARGS_[A-Z_]+: /, '')} (see nix-lan-cache ${command} --help)`);
  }
  if (!allowPositionals && parsed.positionals.length > 0) {
    throw new ConfigError(`${command}: unexpected argument ${JSON.stringify(parsed.positionals[0])} (see nix-lan-cache ${command} --help)`);
  }
  return parsed;
}

export function parseCount(command: string, flag: string, value: string | undefined, fallback: number, min = 0): number {
  if (value === undefined) return fallback;
  if (!/^\d+(\.\d+)?$/.test(value) || Number(value) < min) throw new ConfigError(`${command}: --${flag} must be a number >= ${min}, got ${JSON.stringify(value)}`);
  return Number(value);
}

/**
 * The `--cache` of gc and verify: a directory, or a bucket as
 * `s3://BUCKET?endpoint=URL&region=R` (checked: the credentials are found
 * and the bucket answers). The S3 code is loaded only for an s3:// cache.
 */
export async function openCache(command: string, cache: string | undefined): Promise<CacheFiles> {
  if (cache && isS3Url(cache)) {
    const [{ Bucket }, { S3Files }] = await Promise.all([import('../s3/bucket.js'), import('../push/s3-files.js')]);
    const bucket = new Bucket(parseS3Url(cache));
    try {
      await bucket.check();
    } catch (err) {
      bucket.close();
      throw new ConfigError(`${command}: ${errorMessage(err)}`);
    }
    return new S3Files(bucket);
  }
  return new LocalFiles(await requireCacheDir(command, cache));
}

/** The `--cache DIR` of gc and verify: given, and a directory. */
export async function requireCacheDir(command: string, dir: string | undefined): Promise<string> {
  if (!dir) throw new ConfigError(`${command}: --cache DIR (or s3://BUCKET?endpoint=URL&region=R) is required`);
  const st = await stat(dir).catch(() => undefined);
  if (!st?.isDirectory()) throw new ConfigError(`${command}: ${dir} is not a directory`);
  return dir;
}
