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
 * host and pid, when it started, the store hashes of the closure it is
 * pushing, the NAR keys it relies on, and its multipart uploads in progress.
 * It is rewritten every LEASE_REFRESH_MS while the push runs and deleted when
 * it ends. gc keeps everything a live lease names, every NAR uploaded since
 * its push started (not yet published), and its multipart uploads; a lease
 * is dead once it is older than LEASE_TTL_MS, or at once when its host is
 * gc's and its pid is gone: gc then aborts the uploads it names and deletes it.
 */
export const LEASE_PREFIX = 'pushing/';
export const LEASE_REFRESH_MS = 5 * 60_000;
export const LEASE_TTL_MS = 20 * 60_000;
/** Kept besides the measured clock difference between the pushing host and the bucket (request time, LastModified's whole seconds). */
const CLOCK_MARGIN_MS = 60_000;

interface LeaseBody {
  host: string;
  pid: number;
  /** When the push started and when this copy was written, by the pushing host's clock (ms). */
  since: number;
  written: number;
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
  private readonly since = Date.now();

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

  private write(): Promise<void> {
    // Writes one at a time, in order: the last one written holds everything added so far.
    this.writing = this.writing.catch(() => {}).then(async () => {
      // `written` is taken just before the PUT: against its LastModified it gives gc the clock difference.
      const written = Date.now();
      const body: LeaseBody = { host: HOST(), pid: process.pid, since: this.since, written, hashes: [...this.hashes], nars: [...this.nars], uploads: [...this.uploads.values()] };
      await this.bucket.put(this.key, JSON.stringify(body), 'application/json');
      this.written = written;
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

/** When a lease's push started, by the bucket's clock: its start by the pushing host's clock, moved by how far that clock was from the bucket's when the lease was written. */
function startedInBucketTime(lease: LeaseObject): number | undefined {
  const { since, written } = lease.body;
  if (typeof since !== 'number' || typeof written !== 'number' || !Number.isFinite(since) || !Number.isFinite(written)) return undefined;
  return since + (lease.mtimeMs - written) - CLOCK_MARGIN_MS;
}

function uploadsOf(lease: LeaseObject): Array<{ key: string; uploadId: string }> {
  return (Array.isArray(lease.body.uploads) ? lease.body.uploads : []).filter((u) => typeof u?.key === 'string' && typeof u.uploadId === 'string');
}

/** What the live leases of a bucket hold now, and the multipart uploads they have in progress. */
export async function readLeases(bucket: Bucket, now: number): Promise<InUse & { uploadIds: Set<string> }> {
  const out: InUse & { uploadIds: Set<string> } = { hashes: new Set(), nars: new Set(), uploadIds: new Set() };
  for (const lease of await readLeaseObjects(bucket, now)) {
    if (!lease.live) continue;
    const { body } = lease;
    for (const h of Array.isArray(body.hashes) ? body.hashes : []) if (typeof h === 'string' && isStorePathHash(h)) out.hashes.add(h);
    for (const n of Array.isArray(body.nars) ? body.nars : []) if (typeof n === 'string') out.nars.add(n);
    for (const u of uploadsOf(lease)) out.uploadIds.add(u.uploadId);
    const started = startedInBucketTime(lease);
    if (started !== undefined) out.since = Math.min(out.since ?? Infinity, started);
  }
  return out;
}

/** Aborts the uploads of dead leases and deletes them; returns what was done. */
export async function removeDeadLeases(bucket: Bucket, now: number, dryRun: boolean): Promise<string[]> {
  const done: string[] = [];
  for (const lease of await readLeaseObjects(bucket, now)) {
    if (lease.live) continue;
    for (const u of uploadsOf(lease)) {
      if (!dryRun) await abortUpload(bucket, u.key, u.uploadId).catch(() => {}); // already completed or aborted: nothing to do
      done.push(`${u.key} (unfinished multipart upload of a push that died)`);
    }
    if (!dryRun) await bucket.remove(lease.key);
    done.push(`${lease.key} (lease of a push that died)`);
  }
  return done;
}
