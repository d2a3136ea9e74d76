import { hostname } from 'node:os';
import { isStorePathHash } from '../protocol/storepath.js';
import type { Bucket } from '../s3/bucket.js';
import type { InUse } from './files.js';

/**
 * A push to a bucket cannot "touch" what it found present (S3 has no mtime
 * to move, and radosgw does not move LastModified on a copy onto itself), so
 * it holds a lease instead: `pushing/<id>`, a small JSON object listing the
 * store hashes of the closure it is pushing and the NAR keys it uploaded.
 * It is rewritten every LEASE_REFRESH_MS while the push runs and deleted when
 * it ends. gc keeps everything a lease younger than LEASE_TTL_MS names, and
 * deletes older leases (a push that died).
 */
export const LEASE_PREFIX = 'pushing/';
export const LEASE_REFRESH_MS = 5 * 60_000;
export const LEASE_TTL_MS = 20 * 60_000;

interface LeaseBody {
  hashes: string[];
  nars: string[];
}

export function newLeaseKey(): string {
  const host = hostname().replace(/[^A-Za-z0-9-]/g, '-').slice(0, 40) || 'host';
  return `${LEASE_PREFIX}${host}-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
}

/** The lease a running push holds. */
export class Lease {
  private readonly hashes = new Set<string>();
  private readonly nars = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();
  private written = 0;

  constructor(
    private readonly bucket: Bucket,
    readonly key: string = newLeaseKey(),
  ) {}

  /** Adds store hashes and NAR keys, and writes the lease before returning. */
  async hold(hashes: Iterable<string>, nars: Iterable<string> = []): Promise<void> {
    for (const h of hashes) this.hashes.add(h);
    for (const n of nars) this.nars.add(n);
    await this.write();
    if (!this.timer) {
      this.timer = setInterval(() => void this.write().catch(() => {}), LEASE_REFRESH_MS);
      this.timer.unref();
    }
  }

  /** Rewrites the lease if it is older than `maxAgeMs`. */
  async refresh(maxAgeMs: number): Promise<void> {
    if (Date.now() - this.written > maxAgeMs) await this.write();
  }

  private write(): Promise<void> {
    const body: LeaseBody = { hashes: [...this.hashes], nars: [...this.nars] };
    // Writes one at a time, in order: the last one written holds everything added so far.
    this.writing = this.writing.catch(() => {}).then(async () => {
      const started = Date.now();
      await this.bucket.put(this.key, JSON.stringify(body), 'application/json');
      this.written = started;
    });
    return this.writing;
  }

  async release(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.written === 0 && this.hashes.size === 0) return;
    await this.writing.catch(() => {});
    await this.bucket.remove(this.key).catch(() => {});
  }
}

/** What the live leases of a bucket hold now. */
export async function readLeases(bucket: Bucket, now: number): Promise<InUse> {
  const out: InUse = { hashes: new Set(), nars: new Set() };
  const { objects } = await bucket.list(LEASE_PREFIX);
  for (const o of objects) {
    if (o.mtimeMs < now - LEASE_TTL_MS) continue;
    const text = await bucket.getText(o.key, 64 << 20).catch(() => undefined);
    if (!text) continue;
    let body: Partial<LeaseBody>;
    try {
      body = JSON.parse(text) as Partial<LeaseBody>;
    } catch {
      continue;
    }
    for (const h of Array.isArray(body.hashes) ? body.hashes : []) if (typeof h === 'string' && isStorePathHash(h)) out.hashes.add(h);
    for (const n of Array.isArray(body.nars) ? body.nars : []) if (typeof n === 'string') out.nars.add(n);
  }
  return out;
}
