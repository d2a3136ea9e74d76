import { constants } from 'node:fs';
import { open, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage } from '../errors.js';
import { parseNarInfo, type NarInfo } from '../protocol/narinfo.js';
import { isStorePathHash } from '../protocol/storepath.js';
import { TEMP_PREFIX } from './target.js';

export interface NarInfoFile {
  hash: string;
  file: string;
  mtimeMs: number;
  size: number;
  info?: NarInfo;
  /** Why it could not be parsed. */
  error?: string;
  /** The URL, even from a narinfo that does not parse fully. */
  url?: string;
}

export interface PlainFile {
  rel: string;
  mtimeMs: number;
  size: number;
}

/** The narinfos at the top of a cache directory, parsed. */
export async function readNarInfos(dir: string): Promise<Map<string, NarInfoFile>> {
  const out = new Map<string, NarInfoFile>();
  for (const name of await readdir(dir)) {
    if (!name.endsWith('.narinfo') || name.startsWith(TEMP_PREFIX)) continue;
    const hash = name.slice(0, -'.narinfo'.length);
    if (!isStorePathHash(hash)) continue;
    const st = await stat(join(dir, name)).catch(() => undefined);
    if (!st) continue; // removed since readdir
    const entry: NarInfoFile = { hash, file: name, mtimeMs: st.mtimeMs, size: st.size };
    const text = await readTextNoAtime(join(dir, name)).catch(() => '');
    entry.url = /^URL: (.*)$/m.exec(text)?.[1];
    try {
      entry.info = parseNarInfo(text);
      if (entry.info.path.hash !== hash) entry.error = `its StorePath ${entry.info.storePath} does not match the file name`;
    } catch (err) {
      entry.error = errorMessage(err);
    }
    out.set(hash, entry);
  }
  return out;
}

/**
 * Open flags for reading a cache file without moving its access time: gc
 * orders evictions by when nginx last served a file (its atime), so gc's and
 * verify's own reads must not count. O_NOATIME needs the file's owner (the
 * cache user); anyone else reads normally.
 */
export const NOATIME_FLAGS = constants.O_RDONLY | (constants.O_NOATIME ?? 0);

export async function openNoAtime(path: string) {
  return open(path, NOATIME_FLAGS).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'EPERM') return open(path, 'r');
    throw err;
  });
}

async function readTextNoAtime(path: string): Promise<string> {
  const fh = await openNoAtime(path);
  try {
    return await fh.readFile('utf8');
  } finally {
    await fh.close();
  }
}

/** Files under `sub` (one level), with sizes and mtimes. */
export async function listFiles(dir: string, sub: string): Promise<PlainFile[]> {
  const names = await readdir(join(dir, sub)).catch(() => [] as string[]);
  const out: PlainFile[] = [];
  for (const name of names) {
    const rel = sub ? `${sub}/${name}` : name;
    const st = await stat(join(dir, rel)).catch(() => undefined);
    if (st?.isFile()) out.push({ rel, mtimeMs: st.mtimeMs, size: st.size });
  }
  return out;
}

export function isTemp(rel: string): boolean {
  return rel.split('/').pop()!.startsWith(TEMP_PREFIX);
}

/** A narinfo URL that stays inside the cache directory, or undefined. */
export function safeNarRel(url: string | undefined): string | undefined {
  if (!url || url.startsWith('/') || url.includes('://')) return undefined;
  const parts = url.split('/');
  if (parts.some((p) => p === '' || p === '.' || p === '..')) return undefined;
  return url;
}
