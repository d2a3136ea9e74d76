import { hostname } from 'node:os';
import { processAlive } from '../process-alive.js';
import { isStorePathHash } from '../protocol/storepath.js';
import type { Bucket } from '../s3/bucket.js';
import { abortUpload, type UploadWatch } from '../s3/upload.js';
import type { InUse } from './files.js';

/**
 * A push to a bucket cannot "touch" what it found present (S3 has no mtime
 * to move, and radosgw does not move LastModified on a copy onto itself), so
 * it holds a lease instead: `pushing/<id>`, a small JSON object naming its
 * host and pid, the store hashes of the closure it is pushing, the NAR keys
 * it relies on, and its multipart uploads in progress. It is rewritten every
 * LEASE_REFRESH_MS while the push runs and deleted when it ends. gc keeps
 * everything a live lease names; a lease is dead once it is older than
 * LEASE_TTL_MS, or at once when its host is gc's and its pid is gone: gc
 * then aborts the uploads it names and deletes it.
 */
export const LEASE_PREFIX = 'pushing/';
export const LEASE_REFRESH_MS = 5 * 60_000;
export const LEASE_TTL_MS = 20 * 60_000;

interface LeaseBody {
  host: string;
  pid: number;
  hashes: string[];
  nars: string[];
  uploads: Array<{ key: string; uploadId: string }>;
}

const HOST = () => hostname().slice(0, 200);

/** The lease a running push holds. */
export class Lease implements UploadWatch {
  readonly key: string;
  private readonly hashes = new Set<string>();
  private readonly nars = new Set<string>();
  private readonly uploads = new Map<string, { key: string; uploadId: string }>();
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();
  private written = 0;

  constructor(private readonly bucket: Bucket) {
    const host = HOST().replace(/[^A-Za-z0-9-]/g, '-').slice(0, 40) || 'host';
    this.key = `${LEASE_PREFIX}${host}-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
  }

  /** Adds store hashes and NAR keys, and writes the lease before returning. */
  async hold(hashes: Iterable<string>, nars: Iterable<string> = []): Promise<void> {
    for (const h of hashes) this.hashes.add(h);
    for (const n of nars) this.nars.add(n);
    await this.write();
  }

  /** A multipart upload began; written before its first part is sent. */
  async started(uploadId: string, key = ''): Promise<void> {
    this.uploads.set(uploadId, { key, uploadId });
    await this.write();
  }

  ended(uploadId: string): void {
    this.uploads.delete(uploadId);
  }

  /** The watch for one key's upload. */
  watch(key: string): UploadWatch {
    return { started: (id) => this.started(id, key), ended: (id) => this.ended(id) };
  }

  /** Rewrites the lease if it is older than `maxAgeMs`. */
  async refresh(maxAgeMs: number): Promise<void> {
    if (Date.now() - this.written > maxAgeMs) await this.write();
  }

  private write(): Promise<void> {
    const body: LeaseBody = { host: HOST(), pid: process.pid, hashes: [...this.hashes], nars: [...this.nars], uploads: [...this.uploads.values()] };
    // Writes one at a time, in order: the last one written holds everything added so far.
    this.writing = this.writing.catch(() => {}).then(async () => {
      const started = Date.now();
      await this.bucket.put(this.key, JSON.stringify(body), 'application/json');
      this.written = started;
    });
    if (!this.timer) {
      this.timer = setInterval(() => void this.write().catch(() => {}), LEASE_REFRESH_MS);
      this.timer.unref();
    }
    return this.writing;
  }

  async release(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.written === 0) return;
    await this.writing.catch(() => {});
    await this.bucket.remove(this.key).catch(() => {});
  }
}

interface LeaseObject {
  key: string;
  mtimeMs: number;
  body: Partial<LeaseBody>;
  live: boolean;
}

async function readLeaseObjects(bucket: Bucket, now: number): Promise<LeaseObject[]> {
  const out: LeaseObject[] = [];
  const { objects } = await bucket.list(LEASE_PREFIX);
  for (const o of objects) {
    const text = await bucket.getText(o.key, 64 << 20).catch(() => undefined);
    let body: Partial<LeaseBody> = {};
    try {
      if (text) body = JSON.parse(text) as Partial<LeaseBody>;
    } catch {
      // unreadable: judged by its age alone
    }
    const deadHere = body.host === HOST() && typeof body.pid === 'number' && body.pid !== process.pid && !processAlive(body.pid);
    out.push({ key: o.key, mtimeMs: o.mtimeMs, body, live: o.mtimeMs >= now - LEASE_TTL_MS && !deadHere });
  }
  return out;
}

/** What the live leases of a bucket hold now. */
export async function readLeases(bucket: Bucket, now: number): Promise<InUse> {
  const out: InUse = { hashes: new Set(), nars: new Set() };
  for (const { body, live } of await readLeaseObjects(bucket, now)) {
    if (!live) continue;
    for (const h of Array.isArray(body.hashes) ? body.hashes : []) if (typeof h === 'string' && isStorePathHash(h)) out.hashes.add(h);
    for (const n of Array.isArray(body.nars) ? body.nars : []) if (typeof n === 'string') out.nars.add(n);
  }
  return out;
}

/** Aborts the uploads of dead leases and deletes them; returns what was done. */
export async function removeDeadLeases(bucket: Bucket, now: number, dryRun: boolean): Promise<string[]> {
  const done: string[] = [];
  for (const lease of await readLeaseObjects(bucket, now)) {
    if (lease.live) continue;
    for (const u of Array.isArray(lease.body.uploads) ? lease.body.uploads : []) {
      if (typeof u?.key !== 'string' || typeof u.uploadId !== 'string') continue;
      if (!dryRun) await abortUpload(bucket, u.key, u.uploadId).catch(() => {}); // already completed or aborted: nothing to do
      done.push(`${u.key} (unfinished multipart upload of a push that died)`);
    }
    if (!dryRun) await bucket.remove(lease.key);
    done.push(`${lease.key} (lease of a push that died)`);
  }
  return done;
}
