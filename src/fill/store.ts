import { createReadStream } from 'node:fs';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { LocalTarget } from '../push/local-target.js';
import type { S3Target } from '../push/s3-target.js';
import { cacheBytes } from './cache-size.js';

/** A stored file fill can serve. */
export interface StoredFile {
  size: number;
  stream(): Promise<Readable>;
}

/**
 * Where fill publishes: a cache directory nginx serves (LocalFillStore) or
 * an S3 bucket (S3FillStore; docs/lab.md). Either way NAR downloads are
 * written to temporary files under `root`, checked, then moved into place
 * (renamed, or uploaded whole), and a narinfo is published after its NAR.
 */
export interface FillStore {
  readonly description: string;
  /** A local directory for temporary NAR files and fill's records: the cache directory, or a spool directory for a bucket. */
  readonly root: string;
  /** NAR file names without a '.' (`nar/<FileHash>-xz`): a bucket's (radosgw breaks multipart uploads of dotted keys). */
  readonly dotlessNames: boolean;
  readNarInfo(hash: string): Promise<string | undefined>;
  file(rel: string): Promise<StoredFile | undefined>;
  existingNarInfos(hashes: string[], touch: boolean): Promise<Set<string>>;
  /** Moves a checked temporary file (relative to `root`) into place under `rel`. */
  commit(tempRel: string, rel: string): Promise<void>;
  publishNarInfo(hash: string, text: string, narRel: string): Promise<void>;
  /** Bytes of NARs and narinfos in the cache. */
  bytes(): Promise<number>;
  close(): Promise<void>;
}

export class LocalFillStore implements FillStore {
  readonly dotlessNames = false;

  constructor(private readonly target: LocalTarget) {}

  get description(): string {
    return this.target.root;
  }

  get root(): string {
    return this.target.root;
  }

  readNarInfo(hash: string): Promise<string | undefined> {
    return readFile(join(this.root, `${hash}.narinfo`), 'utf8').catch(() => undefined);
  }

  async file(rel: string): Promise<StoredFile | undefined> {
    const path = join(this.root, rel);
    const st = await stat(path).catch(() => undefined);
    return st?.isFile() ? { size: st.size, stream: async () => createReadStream(path) } : undefined;
  }

  existingNarInfos(hashes: string[], touch: boolean): Promise<Set<string>> {
    return this.target.existingNarInfos(hashes, touch);
  }

  commit(tempRel: string, rel: string): Promise<void> {
    return this.target.commit(tempRel, rel);
  }

  publishNarInfo(hash: string, text: string, narRel: string): Promise<void> {
    return this.target.publishNarInfo(hash, text, narRel);
  }

  bytes(): Promise<number> {
    return cacheBytes(this.root);
  }

  async close(): Promise<void> {}
}

/** A bucket: narinfos and NARs in it, temporary files in a local spool directory. */
export class S3FillStore implements FillStore {
  readonly dotlessNames = true;

  constructor(
    private readonly target: S3Target,
    readonly root: string,
  ) {}

  static async open(target: S3Target, spool: string): Promise<S3FillStore> {
    await mkdir(join(spool, 'nar'), { recursive: true });
    await target.open(false);
    return new S3FillStore(target, spool);
  }

  get description(): string {
    return this.target.description;
  }

  readNarInfo(hash: string): Promise<string | undefined> {
    return this.target.bucket.getText(`${hash}.narinfo`);
  }

  async file(rel: string): Promise<StoredFile | undefined> {
    const o = await this.target.bucket.head(rel);
    if (!o) return undefined;
    return {
      size: o.size,
      stream: async () => {
        const body = await this.target.bucket.get(rel);
        if (!body) throw new Error(`${rel} is gone from ${this.description}`);
        return body;
      },
    };
  }

  /** A fill runs for months: it does not hold what it finds in a lease (push/leases.ts), it only looks. */
  existingNarInfos(hashes: string[]): Promise<Set<string>> {
    return this.target.existingNarInfos(hashes, false);
  }

  commit(tempRel: string, rel: string): Promise<void> {
    return this.target.commit(join(this.root, tempRel), rel);
  }

  publishNarInfo(hash: string, text: string, narRel: string): Promise<void> {
    return this.target.publishNarInfo(hash, text, narRel);
  }

  async bytes(): Promise<number> {
    const [top, nar] = await Promise.all([this.target.bucket.list(''), this.target.bucket.list('nar/')]);
    return [...top.objects.filter((o) => o.key.endsWith('.narinfo')), ...nar.objects].reduce((s, o) => s + o.size, 0);
  }

  close(): Promise<void> {
    return this.target.close();
  }
}
