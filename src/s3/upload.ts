import { open } from 'node:fs/promises';
import type { Bucket } from './bucket.js';

/** Parts of this size (S3's smallest is 5 MiB, but the last) let a NAR reach 10,000 × 16 MiB = 160 GiB; one part is in memory at a time. */
export const DEFAULT_PART_SIZE = 16 * 1024 * 1024;
const MIN_PART_SIZE = 5 * 1024 * 1024;
const MAX_PARTS = 10_000;

/**
 * Uploads a local file to `key`: one PUT up to `partSize`, else a multipart
 * upload reading one part at a time from the file (parts are retried by the
 * SDK, since each is a Buffer). Either way the object appears whole or not
 * at all; a multipart upload that fails is aborted, so no parts are left
 * behind to be billed.
 *
 * Multipart needs a key without '.' on radosgw's POSIX driver (the engine
 * the tests run; docs/lab.md): callers name NARs accordingly.
 */
export interface UploadWatch {
  /** A multipart upload began: record its id where a later gc finds it if this process dies. */
  started(uploadId: string): Promise<void>;
  ended(uploadId: string): void;
}

export async function uploadFile(bucket: Bucket, key: string, path: string, contentType: string, partSize = DEFAULT_PART_SIZE, watch?: UploadWatch): Promise<{ size: number; parts: number }> {
  const fh = await open(path, 'r');
  const readAt = async (position: number, length: number): Promise<Buffer> => {
    const body = Buffer.alloc(length);
    for (let off = 0; off < length; ) {
      const { bytesRead } = await fh.read(body, off, length - off, position + off);
      if (bytesRead === 0) throw new Error(`${path} shrank while it was read`);
      off += bytesRead;
    }
    return body;
  };
  try {
    const { size } = await fh.stat();
    const part = Math.max(MIN_PART_SIZE, partSize);
    if (size <= part) {
      await bucket.put(key, await readAt(0, size), contentType);
      return { size, parts: 1 };
    }
    const count = Math.ceil(size / part);
    if (count > MAX_PARTS) throw bucket.fail('uploading', key, new Error(`${size} bytes need more than ${MAX_PARTS} parts of ${part} bytes`));
    type Create = import('@aws-sdk/client-s3').CreateMultipartUploadCommandOutput;
    type Part = import('@aws-sdk/client-s3').UploadPartCommandOutput;
    const { UploadId } = await bucket.send<Create>('starting a multipart upload of', key, (s) =>
      new s.CreateMultipartUploadCommand({ Bucket: bucket.loc.bucket, Key: key, ContentType: contentType }),
    );
    if (!UploadId) throw bucket.fail('starting a multipart upload of', key, new Error('no UploadId in the answer'));
    try {
      await watch?.started(UploadId);
      const done: Array<{ PartNumber: number; ETag: string }> = [];
      for (let i = 0; i < count; i++) {
        const length = Math.min(part, size - i * part);
        const body = await readAt(i * part, length);
        const PartNumber = i + 1;
        const out = await bucket.send<Part>(`uploading part ${PartNumber} of`, key, (s) =>
          new s.UploadPartCommand({ Bucket: bucket.loc.bucket, Key: key, UploadId, PartNumber, Body: body, ContentLength: length }),
        );
        done.push({ PartNumber, ETag: out.ETag ?? '' });
      }
      await bucket.send('completing the multipart upload of', key, (s) =>
        new s.CompleteMultipartUploadCommand({ Bucket: bucket.loc.bucket, Key: key, UploadId, MultipartUpload: { Parts: done } }),
      );
      watch?.ended(UploadId);
      return { size, parts: count };
    } catch (err) {
      await abortUpload(bucket, key, UploadId).catch(() => {});
      watch?.ended(UploadId);
      throw err;
    }
  } finally {
    await fh.close();
  }
}

export async function abortUpload(bucket: Bucket, key: string, uploadId: string): Promise<void> {
  await bucket.send('aborting the multipart upload of', key, (s) => new s.AbortMultipartUploadCommand({ Bucket: bucket.loc.bucket, Key: key, UploadId: uploadId }));
}

/**
 * Aborts multipart uploads started before `before` (ms since the epoch), but
 * those in `running` (upload ids a live push still sends): those of writers
 * that died. Returns their keys.
 */
export async function abortStaleUploads(bucket: Bucket, before: number, dryRun: boolean, running: ReadonlySet<string> = new Set()): Promise<string[]> {
  // Not every engine lists uploads (radosgw's POSIX driver lists none): push leases name theirs too (push/leases.ts).
  type Out = import('@aws-sdk/client-s3').ListMultipartUploadsCommandOutput;
  const aborted: string[] = [];
  let keyMarker: string | undefined;
  let idMarker: string | undefined;
  for (let page = 0; page < 1000; page++) {
    const out = await bucket.send<Out>('listing multipart uploads', undefined, (s) =>
      new s.ListMultipartUploadsCommand({ Bucket: bucket.loc.bucket, ...(keyMarker ? { KeyMarker: keyMarker } : {}), ...(idMarker ? { UploadIdMarker: idMarker } : {}) }),
    );
    for (const u of out.Uploads ?? []) {
      if (!u.Key || !u.UploadId || (u.Initiated?.getTime() ?? 0) >= before || running.has(u.UploadId)) continue;
      if (!dryRun) await bucket.send('aborting the multipart upload of', u.Key, (s) => new s.AbortMultipartUploadCommand({ Bucket: bucket.loc.bucket, Key: u.Key!, UploadId: u.UploadId! }));
      aborted.push(u.Key);
    }
    if (!out.IsTruncated) break;
    keyMarker = out.NextKeyMarker;
    idMarker = out.NextUploadIdMarker;
  }
  return aborted;
}
