import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { ConfigError, errorMessage } from '../errors.js';
import { parsePublicKey, TrustedKeys, type PublicKey } from '../protocol/signing.js';
import { openCache, parseCommandArgs } from './args.js';
import { LocalFiles } from '../push/cachefiles.js';
import { verify } from '../push/verify.js';

const HELP = `usage: nix-lan-cache verify --cache DIR|s3://BUCKET?endpoint=URL&region=R [--trusted-public-key KEY]... [--deep]

Checks a static binary cache: every narinfo parses, its NAR exists with the
right FileSize and FileHash (with --deep: unpacks to the right NarHash), its
references have narinfos, and (given keys) it carries a valid signature.
Lists orphaned NARs. Exit status 1 if any problem was found, 2 if verify
could not run (e.g. --deep and the xz or zstd program is not installed).

  --trusted-public-key KEY   NAME:BASE64, or a file containing it; repeatable
`;

async function loadPublicKey(text: string): Promise<PublicKey> {
  let body = text;
  if (!/^[^:/]+:[A-Za-z0-9+/]+=*$/.test(text)) {
    body = await readFile(text, 'utf8').catch((err: unknown) => {
      throw new ConfigError(`verify: ${JSON.stringify(text)} is neither a public key nor a readable file: ${errorMessage(err)}`);
    });
  }
  try {
    return parsePublicKey(body);
  } catch (err) {
    throw new ConfigError(`verify: bad public key ${JSON.stringify(text)}: ${errorMessage(err)}`);
  }
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs(
    'verify',
    argv,
    {
      cache: { type: 'string' },
      'trusted-public-key': { type: 'string', multiple: true },
      deep: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    false,
  );
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const keys = values['trusted-public-key'] ?? [];
  const trustedKeys = keys.length > 0 ? new TrustedKeys(await Promise.all(keys.map(loadPublicKey))) : undefined;
  const cache = await openCache('verify', values.cache);
  // A bucket is read over the network: more NARs at once than a disk is read.
  const concurrency = cache instanceof LocalFiles ? availableParallelism() : Math.max(8, availableParallelism());
  const report = await verify(cache, { deep: values.deep === true, concurrency, ...(trustedKeys ? { trustedKeys } : {}) }).finally(() => cache.close());
  for (const p of report.problems) process.stdout.write(`${p.kind}: ${p.file}: ${p.message}\n`);
  for (const o of report.orphans) process.stdout.write(`orphan: ${o}\n`);
  for (const t of report.temps) process.stdout.write(`temporary: ${t}\n`);
  process.stdout.write(
    `verify: ${report.narinfos} narinfos, ${report.nars} NARs, ${report.problems.length} problems, ${report.orphans.length} orphaned NARs, ${report.temps.length} temporary files` +
      `${trustedKeys ? '' : ' (signatures not checked: no --trusted-public-key)'}\n`,
  );
  return report.problems.length > 0 ? 1 : 0;
}
