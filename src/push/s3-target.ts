import { mkdtemp, open, readdir, rm, stat, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { errorMessage } from '../errors.js';
import { processAlive } from '../process-alive.js';
import type { Bucket } from '../s3/bucket.js';
import { uploadFile } from '../s3/upload.js';
import { Lease } from './leases.js';
import { mapLimit } from './limit.js';
import { CACHE_INFO, TargetError, tempName, type CacheTarget } from './target.js';

/** Below this a NAR is sent without first asking whether it is there: a HEAD costs about what the PUT does. */
const HEAD_FIRST_BYTES = 1 << 20;

/**
 * A binary cache in an S3 bucket. A NAR is compressed into a local spool
 * file first (its FileHash names it), then uploaded whole, in one PUT or in
 * parts: an object appears whole or not at all, so nothing needs renaming.
 * NARs are named `nar/<FileHash>-<ext>`, without a '.', because radosgw's
 * POSIX driver breaks multipart uploads of dotted keys (docs/lab.md); the
 * narinfo's URL names the file, so Nix and every reader follow it. A NAR of
 * HEAD_FIRST_BYTES or more already there under its name (content-addressed)
 * is not sent again. What the push found present or uploaded is held by a
 * lease (push/leases.ts) until it ends, so a gc running meanwhile keeps it.
 */
export class S3Target implements CacheTarget {
  private spool: string | undefined;
  private readonly lease: Lease;
  /** NARs this push uploaded: gc keeps them (they are younger than its lease), so their narinfos need no HEAD. */
  private readonly placed = new Set<string>();

  constructor(
    readonly bucket: Bucket,
    private readonly checkConcurrency = 32,
    private readonly spoolParent = tmpdir(),
  ) {
    this.lease = new Lease(bucket);
  }

  get description(): string {
    return this.bucket.description;
  }

  narName(fileHashDigits: string, ext: string): string {
    return `nar/${fileHashDigits}-${ext}`;
  }

  async open(dryRun: boolean): Promise<void> {
    await this.bucket.check();
    if (dryRun) return;
    // Spool files of pushes that were killed (kill -9, a power cut) go first.
    for (const name of await readdir(this.spoolParent).catch(() => [] as string[])) {
      const pid = /^nlc-s3-spool-(\d+)-/.exec(name)?.[1];
      if (pid && Number(pid) !== process.pid && !processAlive(Number(pid))) await rm(join(this.spoolParent, name), { recursive: true, force: true });
    }
    this.spool = await mkdtemp(join(this.spoolParent, `nlc-s3-spool-${process.pid}-`));
    if (!(await this.bucket.head('nix-cache-info'))) await this.bucket.put('nix-cache-info', CACHE_INFO, 'text/x-nix-cache-info');
  }

  async existingNarInfos(hashes: string[], touch: boolean): Promise<Set<string>> {
    // The lease is written before the look: a gc that lists after it keeps every path of this closure.
    if (touch) await this.lease.hold(hashes);
    const found = new Set<string>();
    await mapLimit(hashes, this.checkConcurrency, async (h) => {
      if (await this.bucket.head(`${h}.narinfo`)) found.add(h);
    });
    return found;
  }

  async uploadTemp(_dir: string, source: Readable): Promise<string> {
    if (!this.spool) throw new TargetError(`${this.description} is not open`);
    const path = join(this.spool, tempName(''));
    const fh = await open(path, 'wx', 0o600);
    try {
      for await (const chunk of source as AsyncIterable<Buffer>) {
        for (let off = 0; off < chunk.length; ) off += (await fh.write(chunk, off)).bytesWritten;
      }
    } catch (err) {
      await fh.close().catch(() => {});
      await unlink(path).catch(() => {});
      throw err;
    }
    await fh.close();
    return path;
  }

  async commit(temp: string, final: string): Promise<void> {
    try {
      const { size } = await stat(temp).catch((err: unknown) => {
        throw new TargetError(`spool file ${temp}: ${errorMessage(err)}`);
      });
      // Named by its FileHash: an object of that name and size is this file (an interrupted push sent it).
      const there = size >= HEAD_FIRST_BYTES ? await this.bucket.head(final) : undefined;
      if (!there || there.size !== size) {
        await uploadFile(this.bucket, final, temp, 'application/x-nix-nar', undefined, this.lease.watch(final));
        this.placed.add(final);
      }
    } finally {
      await unlink(temp).catch(() => {});
    }
  }

  async discard(temp: string): Promise<void> {
    await unlink(temp).catch(() => {});
  }

  async publishNarInfo(hash: string, text: string, narFile: string): Promise<void> {
    if (!this.placed.has(narFile)) {
      // Found there, not sent: named in the lease before it is looked at, so a gc that reads the lease after keeps it.
      await this.lease.hold([hash], [narFile]);
      if (!(await this.bucket.head(narFile))) throw new TargetError(`NAR ${narFile} is missing from ${this.description}; not publishing ${hash}.narinfo`);
    }
    await this.bucket.put(`${hash}.narinfo`, text, 'text/x-nix-narinfo');
  }

  async writeFile(rel: string, text: string): Promise<void> {
    await this.bucket.put(rel, text, rel === 'nix-cache-info' ? 'text/x-nix-cache-info' : 'text/plain');
  }

  async close(): Promise<void> {
    await this.lease.release();
    if (this.spool) await rm(this.spool, { recursive: true, force: true });
    this.spool = undefined;
    this.bucket.close();
  }
}
