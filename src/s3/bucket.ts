import type { Readable } from 'node:stream';
import type { S3Client } from '@aws-sdk/client-s3';
import { errorMessage } from '../errors.js';
import { credentialSource, S3CredentialsError, type CredentialSource } from './credentials.js';
import { formatS3Url, type S3Location } from './url.js';

type Sdk = typeof import('@aws-sdk/client-s3');

export interface ObjectInfo {
  key: string;
  size: number;
  mtimeMs: number;
}

export interface BucketTimeouts {
  /** TCP connect to the endpoint. */
  connectMs: number;
  /** Longest silence of a socket in the middle of a request or response. */
  idleMs: number;
}

/**
 * A request to the bucket failed: the message names the operation, the key
 * and the bucket, S3's error code and HTTP status, and what to check. It
 * never contains credentials (the SDK's errors do not).
 */
export class S3Error extends Error {
  override name = 'S3Error';
  constructor(
    message: string,
    readonly status: number | undefined,
    readonly s3Code: string | undefined,
  ) {
    super(message);
  }
}

/** Most objects listed from one bucket; a cache is a few million objects at most. */
const MAX_LIST = 20_000_000;

function hint(op: string, status: number | undefined, code: string | undefined): string {
  if (status === undefined) return ': is the endpoint right, and the S3 engine running?';
  if (code === 'NoSuchBucket' || (status === 404 && op === 'opening the bucket')) return ': the bucket does not exist (create it with your engine\'s tools)';
  if (status === 403 || code === 'AccessDenied' || code === 'InvalidAccessKeyId' || code === 'SignatureDoesNotMatch')
    return ': check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the profile), the region, and that the bucket policy allows it';
  if (status === 301 || code === 'PermanentRedirect' || code === 'AuthorizationHeaderMalformed') return ': the bucket is in another region: set region= in the URL';
  if (status !== undefined && status >= 500) return ': the S3 engine failed; try again later';
  return '';
}

/**
 * One bucket, through the AWS SDK's S3 client (loaded on first use: only the
 * commands that write or list a bucket need it). Checksums are sent and
 * checked only where S3 requires them, as S3-compatible engines expect.
 */
export class Bucket {
  readonly description: string;
  readonly credentials: CredentialSource;
  private client: Promise<{ sdk: Sdk; client: S3Client }> | undefined;

  constructor(
    readonly loc: S3Location,
    private readonly timeouts: BucketTimeouts = { connectMs: 5000, idleMs: 60_000 },
    credentials?: CredentialSource,
  ) {
    this.description = formatS3Url(loc);
    this.credentials = credentials ?? credentialSource(loc);
  }

  private sdk(): Promise<{ sdk: Sdk; client: S3Client }> {
    this.client ??= import('@aws-sdk/client-s3').then((sdk) => ({
      sdk,
      client: new sdk.S3Client({
        region: this.loc.region,
        endpoint: this.loc.endpoint.href,
        forcePathStyle: this.loc.pathStyle,
        credentials: this.credentials,
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
        requestHandler: { connectionTimeout: this.timeouts.connectMs, socketTimeout: this.timeouts.idleMs },
        maxAttempts: 3,
      }),
    }));
    return this.client;
  }

  /** Wraps an SDK error in an S3Error that says what failed where. */
  fail(op: string, key: string | undefined, err: unknown): Error {
    if (err instanceof S3Error || err instanceof S3CredentialsError) return err;
    const e = err as { name?: string; Code?: string; $metadata?: { httpStatusCode?: number } };
    const status = e.$metadata?.httpStatusCode;
    const code = e.Code ?? (e.name && e.name !== 'Error' && !/^\d/.test(e.name) ? e.name : undefined);
    const where = `${op}${key !== undefined ? ` ${key}` : ''} in ${this.description}`;
    const named = code && !/^Unknown/.test(code) ? code : undefined;
    const what = status !== undefined ? `HTTP ${status}${named ? ` ${named}` : ''}` : errorMessage(err);
    return new S3Error(`${where} failed: ${what}${hint(op, status, named)}`, status, named);
  }

  async send<T>(op: string, key: string | undefined, make: (sdk: Sdk) => object): Promise<T> {
    const { sdk, client } = await this.sdk();
    try {
      // One generic entry point for every command; each caller names the output type it asked for.
      return (await client.send(make(sdk) as Parameters<S3Client['send']>[0])) as T;
    } catch (err) {
      throw this.fail(op, key, err);
    }
  }

  /** Checks the bucket answers to these credentials (HeadBucket). */
  async check(): Promise<void> {
    await this.credentials().catch((err: unknown) => {
      throw err instanceof S3CredentialsError ? err : this.fail('reading credentials for', undefined, err);
    });
    await this.send('opening the bucket', undefined, (s) => new s.HeadBucketCommand({ Bucket: this.loc.bucket }));
  }

  /** Objects and "folders" directly under `prefix` ('' or ending in '/'). */
  async list(prefix: string, recursive = false): Promise<{ objects: ObjectInfo[]; prefixes: string[] }> {
    const objects: ObjectInfo[] = [];
    const prefixes: string[] = [];
    let token: string | undefined;
    for (let page = 0; objects.length + prefixes.length < MAX_LIST; page++) {
      type Out = import('@aws-sdk/client-s3').ListObjectsV2CommandOutput;
      const out = await this.send<Out>('listing', prefix || '/', (s) =>
        new s.ListObjectsV2Command({ Bucket: this.loc.bucket, Prefix: prefix, ...(recursive ? {} : { Delimiter: '/' }), ...(token ? { ContinuationToken: token } : {}) }),
      );
      for (const o of out.Contents ?? []) if (o.Key) objects.push({ key: o.Key, size: o.Size ?? 0, mtimeMs: o.LastModified?.getTime() ?? 0 });
      for (const p of out.CommonPrefixes ?? []) if (p.Prefix) prefixes.push(p.Prefix);
      if (!out.IsTruncated || !out.NextContinuationToken) break;
      token = out.NextContinuationToken;
    }
    return { objects: await this.settleListing(objects), prefixes: [...new Set(prefixes)] };
  }

  /**
   * A listing that names a key twice or gives an impossible size is not
   * trusted for that key: its HEAD decides (radosgw's POSIX driver, the
   * engine the tests run, lists some keys twice, once with a garbage size,
   * after objects were overwritten or uploads aborted).
   */
  private async settleListing(objects: ObjectInfo[]): Promise<ObjectInfo[]> {
    const count = new Map<string, number>();
    for (const o of objects) count.set(o.key, (count.get(o.key) ?? 0) + 1);
    const doubtful = new Set(objects.filter((o) => count.get(o.key)! > 1 || !Number.isSafeInteger(o.size) || o.size < 0).map((o) => o.key));
    if (doubtful.size === 0) return objects;
    const settled = new Map<string, ObjectInfo | undefined>();
    for (const key of doubtful) settled.set(key, await this.head(key));
    const out: ObjectInfo[] = [];
    for (const o of objects) {
      if (!doubtful.has(o.key)) out.push(o);
      else if (settled.has(o.key)) {
        const real = settled.get(o.key);
        if (real) out.push(real);
        settled.delete(o.key); // once
      }
    }
    return out;
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    try {
      type Out = import('@aws-sdk/client-s3').HeadObjectCommandOutput;
      const out = await this.send<Out>('HEAD', key, (s) => new s.HeadObjectCommand({ Bucket: this.loc.bucket, Key: key }));
      return { key, size: out.ContentLength ?? 0, mtimeMs: out.LastModified?.getTime() ?? 0 };
    } catch (err) {
      if (err instanceof S3Error && (err.status === 404 || err.s3Code === 'NotFound' || err.s3Code === 'NoSuchKey')) return undefined;
      throw err;
    }
  }

  /** The object's body as a stream, or undefined if there is no such object. */
  async get(key: string, range?: string): Promise<Readable | undefined> {
    try {
      type Out = import('@aws-sdk/client-s3').GetObjectCommandOutput;
      const out = await this.send<Out>('GET', key, (s) => new s.GetObjectCommand({ Bucket: this.loc.bucket, Key: key, ...(range ? { Range: range } : {}) }));
      return out.Body as Readable;
    } catch (err) {
      if (err instanceof S3Error && (err.status === 404 || err.s3Code === 'NoSuchKey')) return undefined;
      throw err;
    }
  }

  async getText(key: string, limit = 4 << 20): Promise<string | undefined> {
    const body = await this.get(key);
    if (!body) return undefined;
    const chunks: Buffer[] = [];
    let size = 0;
    try {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > limit) throw new S3Error(`GET ${key} in ${this.description}: larger than ${limit} bytes`, undefined, undefined);
        chunks.push(chunk);
      }
    } catch (err) {
      body.destroy();
      throw this.fail('reading', key, err);
    }
    return Buffer.concat(chunks).toString('utf8');
  }

  async put(key: string, body: Buffer | string, contentType: string): Promise<void> {
    const bytes = typeof body === 'string' ? Buffer.from(body) : body;
    await this.send('PUT', key, (s) => new s.PutObjectCommand({ Bucket: this.loc.bucket, Key: key, Body: bytes, ContentLength: bytes.length, ContentType: contentType }));
  }

  async remove(key: string): Promise<void> {
    await this.send('DELETE', key, (s) => new s.DeleteObjectCommand({ Bucket: this.loc.bucket, Key: key }));
  }

  close(): void {
    void this.client?.then(({ client }) => client.destroy(), () => {});
  }
}
