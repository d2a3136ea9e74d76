import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';
import { parseStorePath } from '../protocol/storepath.js';
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
export async function readRoots(cacheDir: string): Promise<Map<string, RootEntry[]>> {
  const out = new Map<string, RootEntry[]>();
  const names = await readdir(join(cacheDir, 'roots'), { withFileTypes: true }).catch(() => []);
  for (const n of names) {
    if (!n.isDirectory() || !NAME_RE.test(n.name)) continue;
    const entries: RootEntry[] = [];
    for (const file of await readdir(join(cacheDir, 'roots', n.name))) {
      if (file.startsWith(TEMP_PREFIX)) continue;
      const time = parseRootFileName(file);
      if (!time) continue;
      const rel = `roots/${n.name}/${file}`;
      const storePaths = parseRootListing(await readFile(join(cacheDir, rel), 'utf8'));
      entries.push({ name: n.name, file, rel, time, storePaths });
    }
    entries.sort((a, b) => b.time.getTime() - a.time.getTime());
    out.set(n.name, entries);
  }
  return out;
}
