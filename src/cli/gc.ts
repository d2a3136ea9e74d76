import { openCache, parseCommandArgs, parseCount } from './args.js';
import { gc } from '../push/gc.js';
import { formatBytes, parseSize } from '../format.js';
import { ConfigError } from '../errors.js';

const HELP = `usage: nix-lan-cache gc --cache DIR|s3://BUCKET?endpoint=URL&region=R [--keep N] [--keep-days D] [--grace-minutes M] [--max-size SIZE] [--dry-run]

Deletes from a static binary cache what no kept root needs: keeps the closures
of the newest N roots of each name (default 3), of roots younger than D days,
and anything pushed in the last D days (default 14). Never deletes files
younger than M minutes (default 60), so it is safe while a push runs.

With --max-size SIZE (e.g. 200G), then deletes the least recently served
paths (pushed or filled) until the cache holds at most SIZE, never one a kept
root needs and never one another path in the cache refers to. Served time is
the files' access time (see docs/fill.md).
`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs(
    'gc',
    argv,
    {
      cache: { type: 'string' },
      keep: { type: 'string' },
      'keep-days': { type: 'string' },
      'grace-minutes': { type: 'string' },
      'max-size': { type: 'string' },
      'dry-run': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    false,
  );
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const dryRun = values['dry-run'] === true;
  const maxSizeText = values['max-size'];
  const maxSize = maxSizeText === undefined ? undefined : parseSize(maxSizeText);
  if (maxSizeText !== undefined && !maxSize) throw new ConfigError(`gc: --max-size must be a size such as 200G or a number of bytes, got ${JSON.stringify(maxSizeText)}`);
  const cache = await openCache('gc', values.cache);
  const report = await gc(cache, {
    keep: parseCount('gc', 'keep', values.keep, 3),
    keepDays: parseCount('gc', 'keep-days', values['keep-days'], 14),
    graceMinutes: parseCount('gc', 'grace-minutes', values['grace-minutes'], 60),
    dryRun,
    ...(maxSize ? { maxSize } : {}),
  }).finally(() => cache.close());
  const verb = dryRun ? 'would delete' : 'deleted';
  for (const r of report.rootsExpired) process.stdout.write(`${verb} root ${r}\n`);
  for (const f of report.narinfosDeleted) process.stdout.write(`${verb} ${f}\n`);
  for (const f of report.evicted) process.stdout.write(`${verb} ${f} (least recently served, over --max-size)\n`);
  for (const f of report.narsDeleted) process.stdout.write(`${verb} ${f}\n`);
  for (const f of report.tempsDeleted) process.stdout.write(`${verb} stale ${f}\n`);
  for (const f of report.staleDeleted) process.stdout.write(`${verb} ${f}\n`);
  process.stdout.write(
    `gc: kept ${report.rootsKept.length} roots and ${report.narinfosKept} narinfos; ${verb} ${report.rootsExpired.length} roots, ` +
      `${report.narinfosDeleted.length} narinfos, ${report.narsDeleted.length} NARs, ${report.tempsDeleted.length} stale temporary files; ` +
      `${dryRun ? 'would free' : 'freed'} ${formatBytes(report.bytesFreed)} (${report.bytesFreed} bytes)` +
      `${report.sizeAfter !== undefined ? `; ${formatBytes(report.sizeAfter)} left (${report.evicted.length} paths evicted for --max-size)` : ''}\n`,
  );
  return 0;
}
