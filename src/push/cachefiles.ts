import { constants } from 'node:fs';
import { open, readdir, stat, unlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { errorMessage } from '../errors.js';
import { parseNarInfo, type NarInfo } from '../protocol/narinfo.js';
import { isStorePathHash } from '../protocol/storepath.js';
import { noneInUse, type CacheFile, type CacheFiles, type InUse } from './files.js';
import { mapLimit } from './limit.js';
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

export type PlainFile = CacheFile;

/** A directory path, or the files of a cache as they are. */
export function cacheFiles(cache: string | CacheFiles): CacheFiles {
  return typeof cache === 'string' ? new LocalFiles(cache) : cache;
}

/** The narinfos at the top of a cache, parsed. */
export async function readNarInfos(cache: string | CacheFiles, concurrency = 16): Promise<Map<string, NarInfoFile>> {
  const files = cacheFiles(cache);
  const out = new Map<string, NarInfoFile>();
  const names = (await files.list('')).filter((f) => f.rel.endsWith('.narinfo') && !f.rel.startsWith(TEMP_PREFIX) && isStorePathHash(f.rel.slice(0, -'.narinfo'.length)));
  await mapLimit(names, concurrency, async (f) => {
    const hash = f.rel.slice(0, -'.narinfo'.length);
    const text = await files.readText(f.rel).catch(() => undefined);
    if (text === undefined) return; // removed since the listing
    const entry: NarInfoFile = { hash, file: f.rel, mtimeMs: f.mtimeMs, size: f.size };
    entry.url = /^URL: (.*)$/m.exec(text)?.[1];
    try {
      entry.info = parseNarInfo(text);
      if (entry.info.path.hash !== hash) entry.error = `its StorePath ${entry.info.storePath} does not match the file name`;
    } catch (err) {
      entry.error = errorMessage(err);
    }
    out.set(hash, entry);
  });
  return new Map([...out].sort(([a], [b]) => a.localeCompare(b)));
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

/** A cache directory on this machine. */
export class LocalFiles implements CacheFiles {
  readonly root: string;

  constructor(root: string) {
    this.root = resolve(root);
  }

  get description(): string {
    return this.root;
  }

  async list(sub: string): Promise<CacheFile[]> {
    const names = await readdir(join(this.root, sub)).catch(() => [] as string[]);
    const out: CacheFile[] = [];
    for (const name of names) {
      const f = await this.stat(sub ? `${sub}/${name}` : name);
      if (f) out.push(f);
    }
    return out;
  }

  async listDirs(sub: string): Promise<string[]> {
    const entries = await readdir(join(this.root, sub), { withFileTypes: true }).catch(() => []);
    return entries.filter((e) => e.isDirectory()).map((e) => e.name);
  }

  async stat(rel: string): Promise<CacheFile | undefined> {
    const st = await stat(join(this.root, rel)).catch(() => undefined);
    return st?.isFile() ? { rel, size: st.size, mtimeMs: st.mtimeMs, atimeMs: st.atimeMs } : undefined;
  }

  async readText(rel: string): Promise<string | undefined> {
    const fh = await openNoAtime(join(this.root, rel)).catch(() => undefined);
    if (!fh) return undefined;
    try {
      return await fh.readFile('utf8');
    } finally {
      await fh.close();
    }
  }

  async read(rel: string): Promise<Readable | undefined> {
    const fh = await openNoAtime(join(this.root, rel)).catch(() => undefined);
    return fh?.createReadStream();
  }

  async remove(rel: string): Promise<void> {
    await unlink(join(this.root, rel)).catch(() => undefined);
  }

  async inUse(): Promise<InUse> {
    return noneInUse();
  }

  async removeStale(): Promise<string[]> {
    return [];
  }

  async close(): Promise<void> {}
}

/** Files under `sub` (one level) of a cache directory, with sizes and mtimes. */
export async function listFiles(dir: string, sub: string): Promise<PlainFile[]> {
  return new LocalFiles(dir).list(sub);
}

export function isTemp(rel: string): boolean {
  return rel.split('/').pop()!.startsWith(TEMP_PREFIX);
}

/** A narinfo URL that stays inside the cache, or undefined. */
export function safeNarRel(url: string | undefined): string | undefined {
  if (!url || url.startsWith('/') || url.includes('://')) return undefined;
  const parts = url.split('/');
  if (parts.some((p) => p === '' || p === '.' || p === '..')) return undefined;
  return url;
}
