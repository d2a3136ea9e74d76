import type { Readable } from 'node:stream';

/** One file of a cache: a file in a directory or an object in a bucket. */
export interface CacheFile {
  /** Relative to the cache root, '/'-separated. */
  rel: string;
  size: number;
  mtimeMs: number;
  /** When it was last read, where the storage knows (a directory's atime); else its mtime. */
  atimeMs: number;
}

/** What writers running now need kept, beyond what file ages say (a bucket's push leases). */
export interface InUse {
  /** Store path hashes whose narinfos (and closures) must stay. */
  hashes: Set<string>;
  /** NAR files that must stay. */
  nars: Set<string>;
  /**
   * NAR files modified at or after this (ms, the storage's clock) must stay:
   * what a running writer uploaded and has not published yet.
   */
  since?: number;
}

/** Whether a running writer needs this NAR file. */
export function heldNar(inUse: InUse, file: Pick<CacheFile, 'rel' | 'mtimeMs'>): boolean {
  return inUse.nars.has(file.rel) || (inUse.since !== undefined && file.mtimeMs >= inUse.since);
}

/**
 * The files of a binary cache as gc and verify read them: a directory
 * (`LocalFiles`) or an S3 bucket (`S3Files`). Reads do not count as serving
 * (a directory is read without moving access times).
 */
export interface CacheFiles {
  readonly description: string;
  /** Files directly under `sub` ('' is the root). */
  list(sub: string): Promise<CacheFile[]>;
  /** Names of the folders directly under `sub`. */
  listDirs(sub: string): Promise<string[]>;
  stat(rel: string): Promise<CacheFile | undefined>;
  readText(rel: string): Promise<string | undefined>;
  read(rel: string): Promise<Readable | undefined>;
  remove(rel: string): Promise<void>;
  /** What running writers protect now; a directory's writers protect by touching files, so it is empty there. */
  inUse(now: number): Promise<InUse>;
  /** Removes what writers that died left, older than `before` (a bucket's unfinished multipart uploads and stale leases); returns what. */
  removeStale(before: number, dryRun: boolean): Promise<string[]>;
  close(): Promise<void>;
}

export function noneInUse(): InUse {
  return { hashes: new Set(), nars: new Set() };
}
