import { ConfigError } from '../errors.js';
import { parseStorePath } from '../protocol/storepath.js';
import { cacheFiles } from './cachefiles.js';
import type { CacheFiles } from './files.js';
import { TEMP_PREFIX } from './target.js';

/**
 * A root records one push: `roots/<name>/<timestamp>` lists the store paths
 * of the closure that was pushed, one per line. Gc keeps the closures of the
 * newest roots of each name.
 */
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

export function checkRootName(name: string): string {
  if (!NAME_RE.test(name)) throw new ConfigError(`bad root name ${JSON.stringify(name)}: use letters, digits, '.', '_' and '-'`);
  return name;
}

/** `2024-05-01T12-00-00.123Z`: sorts by time, no colons. */
export function rootFileName(date: Date): string {
  return date.toISOString().replace(/:/g, '-');
}

export function parseRootFileName(file: string): Date | undefined {
  const m = /^(\d{4}-\d{2}-\d{2}T\d{2})-(\d{2})-(\d{2}(?:\.\d{3})?Z)$/.exec(file);
  if (!m) return undefined;
  const d = new Date(`${m[1]}:${m[2]}:${m[3]}`);
  return Number.isNaN(d.getTime()) ? undefined : d;
}

export function formatRootListing(storePaths: string[]): string {
  return storePaths.map((p) => `${p}\n`).join('');
}

export function parseRootListing(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && parseStorePath(l) !== undefined);
}

export interface RootEntry {
  name: string;
  file: string;
  /** Relative to the cache root. */
  rel: string;
  time: Date;
  storePaths: string[];
}

/** Every root under `<cache>/roots`, newest first within each name. */
export async function readRoots(cache: string | CacheFiles): Promise<Map<string, RootEntry[]>> {
  const files = cacheFiles(cache);
  const out = new Map<string, RootEntry[]>();
  for (const name of (await files.listDirs('roots')).sort()) {
    if (!NAME_RE.test(name)) continue;
    const entries: RootEntry[] = [];
    for (const f of await files.list(`roots/${name}`)) {
      const file = f.rel.slice(`roots/${name}/`.length);
      if (file.startsWith(TEMP_PREFIX)) continue;
      const time = parseRootFileName(file);
      if (!time) continue;
      const text = await files.readText(f.rel);
      if (text === undefined) continue; // removed since the listing
      entries.push({ name, file, rel: f.rel, time, storePaths: parseRootListing(text) });
    }
    entries.sort((a, b) => b.time.getTime() - a.time.getTime());
    out.set(name, entries);
  }
  return out;
}
