import { constants } from 'node:fs';
import { access, mkdir, open, rename, stat, unlink, utimes } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { fsyncDir, writeFileAtomic } from '../atomic-file.js';
import { errorMessage } from '../errors.js';
import { mapLimit } from './limit.js';
import { CACHE_INFO, TargetError, tempName, type CacheTarget } from './target.js';

/** mkdir -p that reports EROFS/EACCES as such (Node's recursive mkdir says ENOENT on a read-only mount). */
async function ensureDir(dir: string, depth = 0): Promise<void> {
  try {
    await mkdir(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return;
    if (code !== 'ENOENT' || depth > 64) throw err;
    await ensureDir(dirname(dir), depth + 1);
    await ensureDir(dir, depth + 1);
  }
}

/** A cache directory on this machine (or a mount of one). */
export class LocalTarget implements CacheTarget {
  readonly root: string;

  constructor(root: string, private readonly checkConcurrency = 32) {
    this.root = resolve(root);
  }

  get description(): string {
    return this.root;
  }

  private p(rel: string): string {
    return join(this.root, rel);
  }

  async open(dryRun: boolean): Promise<void> {
    if (dryRun) {
      const st = await stat(this.root).catch(() => undefined);
      if (st && !st.isDirectory()) throw new TargetError(`${this.root} is not a directory`);
      return;
    }
    try {
      await ensureDir(this.p('nar'));
      await ensureDir(this.p('roots'));
      await access(this.root, constants.W_OK);
      const exists = await stat(this.p('nix-cache-info')).then(
        () => true,
        () => false,
      );
      if (!exists) await this.writeFile('nix-cache-info', CACHE_INFO);
    } catch (err) {
      throw new TargetError(`cannot write to cache ${this.root}: ${errorMessage(err)}`);
    }
  }

  async existingNarInfos(hashes: string[], touch: boolean): Promise<Set<string>> {
    const found = new Set<string>();
    await mapLimit(hashes, this.checkConcurrency, async (h) => {
      // Refreshing the mtime is the existence check: it tells a concurrent gc this narinfo is wanted again.
      const now = new Date();
      if (await (touch ? utimes(this.p(`${h}.narinfo`), now, now) : stat(this.p(`${h}.narinfo`))).then(() => true, () => false)) found.add(h);
    });
    return found;
  }

  async uploadTemp(dir: string, source: Readable): Promise<string> {
    const rel = tempName(dir);
    const fh = await open(this.p(rel), 'wx', 0o644);
    try {
      for await (const chunk of source as AsyncIterable<Buffer>) {
        for (let off = 0; off < chunk.length; ) off += (await fh.write(chunk, off)).bytesWritten;
      }
      await fh.sync();
    } catch (err) {
      await fh.close().catch(() => {});
      await unlink(this.p(rel)).catch(() => {});
      throw err;
    }
    await fh.close();
    return rel;
  }

  async commit(temp: string, final: string): Promise<void> {
    await rename(this.p(temp), this.p(final));
    await fsyncDir(dirname(this.p(final)));
  }

  async discard(temp: string): Promise<void> {
    await unlink(this.p(temp)).catch(() => {});
  }

  async publishNarInfo(hash: string, text: string, narFile: string): Promise<void> {
    await writeFileAtomic(this.p(`${hash}.narinfo`), text, {
      temp: this.p(tempName('', '.narinfo')),
      // Fails with ENOENT if a gc removed the NAR in the meantime; the touch also tells gc the NAR is young.
      beforeRename: async () => {
        const now = new Date();
        await utimes(this.p(narFile), now, now);
      },
    });
  }

  async writeFile(rel: string, text: string): Promise<void> {
    const dir = dirname(rel) === '.' ? '' : dirname(rel);
    await ensureDir(this.p(dir || '.'));
    await writeFileAtomic(this.p(rel), text, { temp: this.p(tempName(dir)) });
  }

  async close(): Promise<void> {}
}
