import type { Readable } from 'node:stream';
import type { Bucket } from '../s3/bucket.js';
import { abortStaleUploads } from '../s3/upload.js';
import type { CacheFile, CacheFiles, InUse } from './files.js';
import { readLeases, removeDeadLeases } from './leases.js';

/**
 * A binary cache in a bucket, as gc and verify read it: objects for files,
 * key prefixes for folders, LastModified for mtimes (S3 keeps no access
 * time: gc --max-size evicts by when a path was last pushed or filled).
 * What running pushes hold is in their leases (push/leases.ts).
 */
export class S3Files implements CacheFiles {
  constructor(readonly bucket: Bucket) {}

  get description(): string {
    return this.bucket.description;
  }

  private static prefix(sub: string): string {
    return sub ? `${sub.replace(/\/+$/, '')}/` : '';
  }

  async list(sub: string): Promise<CacheFile[]> {
    const { objects } = await this.bucket.list(S3Files.prefix(sub));
    return objects.filter((o) => !o.key.endsWith('/')).map((o) => ({ rel: o.key, size: o.size, mtimeMs: o.mtimeMs, atimeMs: o.mtimeMs }));
  }

  async listDirs(sub: string): Promise<string[]> {
    const prefix = S3Files.prefix(sub);
    const { prefixes } = await this.bucket.list(prefix);
    return prefixes.map((p) => p.slice(prefix.length).replace(/\/$/, '')).filter(Boolean);
  }

  async stat(rel: string): Promise<CacheFile | undefined> {
    const o = await this.bucket.head(rel);
    return o ? { rel, size: o.size, mtimeMs: o.mtimeMs, atimeMs: o.mtimeMs } : undefined;
  }

  readText(rel: string): Promise<string | undefined> {
    return this.bucket.getText(rel);
  }

  read(rel: string): Promise<Readable | undefined> {
    return this.bucket.get(rel);
  }

  async remove(rel: string): Promise<void> {
    await this.bucket.remove(rel);
  }

  inUse(now: number): Promise<InUse> {
    return readLeases(this.bucket, now);
  }

  /**
   * Leases of pushes that died (and the multipart uploads they name), and
   * unfinished multipart uploads started before `before` where the engine
   * lists them, but those a live push still sends (a large NAR over a slow
   * link can take longer than the grace period).
   */
  async removeStale(before: number, dryRun: boolean): Promise<string[]> {
    const now = Date.now();
    const out = await removeDeadLeases(this.bucket, now, dryRun);
    const { uploadIds } = await readLeases(this.bucket, now);
    for (const k of await abortStaleUploads(this.bucket, before, dryRun, uploadIds)) out.push(`${k} (unfinished multipart upload)`);
    return out;
  }

  async close(): Promise<void> {
    this.bucket.close();
  }
}
