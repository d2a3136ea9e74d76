import { stat } from 'node:fs/promises';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError, errorMessage } from '../errors.js';

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

/** The `--cache DIR` of gc and verify: given, and a directory. */
export async function requireCacheDir(command: string, dir: string | undefined): Promise<string> {
  if (!dir) throw new ConfigError(`${command}: --cache DIR is required`);
  const st = await stat(dir).catch(() => undefined);
  if (!st?.isDirectory()) throw new ConfigError(`${command}: ${dir} is not a directory`);
  return dir;
}
