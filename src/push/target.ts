import type { Readable } from 'node:stream';

/** The file a push writes temporarily before renaming it into place. Gc treats young ones as alive. */
export const TEMP_PREFIX = '.tmp-';

export function tempName(dir: string, suffix = ''): string {
  const rnd = Math.random().toString(36).slice(2, 10);
  return `${dir ? `${dir}/` : ''}${TEMP_PREFIX}${process.pid}-${Date.now()}-${rnd}${suffix}`;
}

export const CACHE_INFO = 'StoreDir: /nix/store\n';

/**
 * A static binary cache that push writes into: a local directory, a
 * directory on another machine reached over ssh, or an S3 bucket. Paths are
 * relative to the cache root. Every write is to a temporary name, fsynced,
 * then renamed (a bucket: a local spool file, then one upload that appears
 * whole or not at all).
 */
export interface CacheTarget {
  readonly description: string;
  /** The name of a NAR file with this FileHash (nix32 digits) and extension; default `nar/<digits>.nar.<ext>`. */
  narName?(fileHashDigits: string, ext: string): string;
  /** Checks the target is usable; creates `nar/`, `roots/` and `nix-cache-info` unless `dryRun`. */
  open(dryRun: boolean): Promise<void>;
  /**
   * Which of these store path hashes already have a `<hash>.narinfo`. With
   * `touch`, refreshes the mtime of those found, so a concurrent gc's grace
   * period keeps them while this push publishes narinfos that refer to them.
   */
  existingNarInfos(hashes: string[], touch: boolean): Promise<Set<string>>;
  /** Streams `source` into a fresh temporary file in `dir`, fsynced; returns its relative name. */
  uploadTemp(dir: string, source: Readable): Promise<string>;
  /** Renames a temporary file into place. */
  commit(temp: string, final: string): Promise<void>;
  /** Removes a temporary file, ignoring one that is already gone. */
  discard(temp: string): Promise<void>;
  /**
   * Writes `<hash>.narinfo` atomically, but only if `narFile` still exists;
   * refreshes `narFile`'s mtime first so that a concurrent gc sees it as young.
   * Rejects (writing nothing) if the NAR is gone.
   */
  publishNarInfo(hash: string, text: string, narFile: string): Promise<void>;
  /** Writes a small file atomically (e.g. a root listing). */
  writeFile(rel: string, text: string): Promise<void>;
  close(): Promise<void>;
}

export class TargetError extends Error {
  override name = 'TargetError';
}
