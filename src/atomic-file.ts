import { randomBytes } from 'node:crypto';
import { open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/**
 * Crash-safe file replacement, for every file the project writes that a
 * reader may see at any moment (stats.json, narinfos, nix-cache-info, roots):
 * the reader finds the old file or the new one, whole, never a part.
 */

/** fsync of a directory, so a rename in it survives a power cut; filesystems that refuse it still renamed atomically. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } catch {
    // e.g. EINVAL on some FUSE/network filesystems: the rename is still atomic
  } finally {
    await fh.close();
  }
}

/** A temporary name beside `file`: `.tmp-<pid>-<random>-<name>` hides it from the cache's readers (nginx denies dot files). */
export function tempPathFor(file: string): string {
  return join(dirname(file), `.tmp-${process.pid}-${randomBytes(4).toString('hex')}-${basename(file)}`);
}

export interface AtomicWriteOptions {
  /** Where the new content is written before the rename (default: `tempPathFor(file)`). */
  temp?: string;
  /** Runs after the content is durable and before it replaces `file`; a throw leaves `file` untouched. */
  beforeRename?: () => Promise<void>;
}

/** Temp file, write, fsync, rename over `file`, fsync of the directory; the temp file is removed on any failure. */
export async function writeFileAtomic(file: string, data: string | Uint8Array, options: AtomicWriteOptions = {}): Promise<void> {
  const temp = options.temp ?? tempPathFor(file);
  try {
    const fh = await open(temp, 'wx', 0o644);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await options.beforeRename?.();
    await rename(temp, file);
  } catch (err) {
    await unlink(temp).catch(() => {});
    throw err;
  }
  await fsyncDir(dirname(file));
}
