import { createHash } from 'node:crypto';
import { open, unlink, type FileHandle } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { AppError, errorMessage } from '../errors.js';
import { writeRawError } from '../http/errors.js';
import { sha256FromBytes } from '../protocol/hash.js';
import { tempName } from '../push/target.js';
import { drainedOrGone } from './drain.js';
import { describeMismatch, NarCheck } from './nar-check.js';
import type { FillEntry } from './entry.js';
import type { FillStats } from './stats.js';
import type { FillStore } from './store.js';

/** Fill's own temporaries end in this, so a restarted fill can remove those of a fill that died. */
export const FILL_TEMP_SUFFIX = '.fill';

export type DownloadResult =
  | { status: 'stored'; fileSize: number }
  /** Clients were served; the file was not kept (disk full, over max size). */
  | { status: 'not-stored'; reason: string }
  | { status: 'failed'; code: 'absent' | 'unavailable' | 'upstream-broke' | 'hash-mismatch'; reason: string };

export interface DownloadDeps {
  target: FillStore;
  stats: FillStats;
  log: Logger;
  /** Why nothing should be stored now (e.g. the cache is over its size cap), or undefined. */
  storeRefusal(): string | undefined;
}

type Sink = { res: ServerResponse };

/**
 * One NAR download from upstream, shared by every client that asks for it
 * meanwhile. Bytes go to the clients and into a temporary file while the
 * file is hashed and unpacked to check FileHash/FileSize and NarHash/NarSize
 * against the signed narinfo. The last byte is held back until the check
 * passes, so a client never receives a complete bad NAR: on a mismatch every
 * response is aborted and the file is removed. Only a verified file is
 * renamed into place. A client that hangs up does not stop the fill.
 */
export class NarDownload {
  private readonly sinks = new Set<Sink>();
  private readonly abortController = new AbortController();
  private wakers: Array<() => void> = [];
  private length: string | undefined;
  private released = 0;
  /** Bytes in the temporary file (while `storing`). */
  private stored = 0;
  private storing = false;
  private tempRel: string | undefined;
  state: 'starting' | 'streaming' | 'done' | 'failed' = 'starting';
  readonly done: Promise<DownloadResult>;

  constructor(
    readonly entry: FillEntry,
    private readonly deps: DownloadDeps,
  ) {
    this.done = this.run().catch((err: unknown) => {
      this.deps.log.error({ err, storeHash: entry.storeHash }, 'NAR fill failed unexpectedly');
      return this.fail('upstream-broke', errorMessage(err));
    });
  }

  /**
   * Serves this download to a client: from the start when it has not begun,
   * otherwise from the temporary file and then live. False when it cannot
   * (the download failed, or it is no longer being written to disk).
   */
  attach(res: ServerResponse): boolean {
    if (this.state === 'failed' || this.state === 'done') return false;
    if (this.state === 'starting' || this.released === 0) {
      this.addSink(res);
      return true;
    }
    if (!this.storing) return false;
    void this.tail(res);
    return true;
  }

  abort(): void {
    this.abortController.abort();
  }

  private addSink(res: ServerResponse): void {
    if (this.state !== 'starting') this.writeHead(res);
    const sink = { res };
    this.sinks.add(sink);
    res.once('close', () => this.sinks.delete(sink));
  }

  private writeHead(res: ServerResponse): void {
    if (res.headersSent) return;
    // Marked: the laptops' proxies count these bytes as "filled for us" (nginx's hits carry no mark).
    res.writeHead(200, { 'content-type': 'application/x-nix-nar', 'x-nix-lan-cache-fill': 'filled', ...(this.length ? { 'content-length': this.length } : {}) });
    // At once: the laptops' proxies give a LAN cache well under a second for the first byte.
    res.flushHeaders();
  }

  private wake(): void {
    const w = this.wakers;
    this.wakers = [];
    for (const f of w) f();
  }

  private async run(): Promise<DownloadResult> {
    const { entry, deps } = this;
    const fetched = await entry.origin.fetchFile(entry.upstreamUrl, { signal: this.abortController.signal });
    if (fetched.status !== 'present') {
      return this.fail(fetched.status === 'absent' ? 'absent' : 'unavailable', fetched.status === 'absent' ? `upstream answered HTTP ${fetched.statusCode} for the NAR` : fetched.reason);
    }
    deps.stats.narDownloads++;
    const length = fetched.headers['content-length'];
    this.length = typeof length === 'string' ? length : entry.info.fileSize !== undefined ? String(entry.info.fileSize) : undefined;
    this.state = 'streaming';
    for (const s of this.sinks) this.writeHead(s.res);
    const fh = await this.openTemp();
    const check = new NarCheck(entry.info.compression);
    const fileHash = createHash('sha256');
    let fileSize = 0;
    let held: Buffer | undefined;
    try {
      for await (const chunk of fetched.body as AsyncIterable<Buffer>) {
        fileHash.update(chunk);
        fileSize += chunk.length;
        deps.stats.bytesFromUpstream += chunk.length;
        if (this.storing) await this.store(fh!, chunk);
        await check.write(chunk);
        // Hold back only the last byte seen: enough that no client can complete a NAR before its check passes.
        const all = held ? Buffer.concat([held, chunk]) : chunk;
        if (all.length > 1) await this.release(all.subarray(0, all.length - 1));
        held = all.subarray(all.length - 1);
      }
    } catch (err) {
      fetched.body.destroy();
      check.abort();
      await this.dropTemp(fh);
      if (!this.abortController.signal.aborted) entry.origin.reportFailure(`NAR body failed: ${errorMessage(err)}`);
      deps.stats.upstreamFailures++;
      return this.fail('upstream-broke', `the NAR download broke off after ${fileSize} bytes: ${errorMessage(err)}`);
    }
    const got = await check.result().then(
      (r) => ({ ...r, error: undefined }),
      (err: unknown) => ({ narHash: undefined, narSize: undefined, error: errorMessage(err) }),
    );
    const info = entry.info;
    const mismatch = describeMismatch(info, { fileHash: sha256FromBytes(fileHash.digest()), fileSize, ...got });
    if (mismatch) {
      deps.stats.hashFailures++;
      await this.dropTemp(fh);
      deps.log.error({ event: 'fill-hash-mismatch', storePath: info.storePath, origin: entry.origin.name }, `NAR of ${info.storePath} from ${entry.origin.name} is not what its signed narinfo describes (${mismatch}); nothing published, clients aborted`);
      return this.fail('hash-mismatch', mismatch);
    }
    // Checked: the clients get the last bytes now; making the file durable and renaming it is the cache's business.
    if (held) await this.release(held);
    this.complete = true;
    for (const s of this.sinks) s.res.end();
    this.sinks.clear();
    this.wake();
    let result: DownloadResult = { status: 'stored', fileSize };
    if (this.storing && fh && this.tempRel) {
      try {
        await fh.sync();
        await fh.close();
        await deps.target.commit(this.tempRel, info.url);
        this.tempRel = undefined;
      } catch (err) {
        result = { status: 'not-stored', reason: this.stopStoring(err) };
        await this.dropTemp(undefined);
      }
    } else {
      result = { status: 'not-stored', reason: this.notStoredReason ?? 'not stored' };
    }
    this.state = 'done';
    this.wake();
    if (result.status === 'not-stored') deps.stats.notStored++;
    return result;
  }

  private notStoredReason: string | undefined;
  /** Every byte was checked and released to the clients (the file may not be renamed into place yet). */
  private complete = false;

  /** Opens the temporary file, unless storing is refused; a failure to open is logged and the clients are still served. */
  private async openTemp(): Promise<FileHandle | undefined> {
    const refusal = this.deps.storeRefusal();
    if (refusal) {
      this.notStoredReason = refusal;
      this.deps.log.warn({ event: 'fill-not-stored', storePath: this.entry.info.storePath, reason: refusal }, `serving ${this.entry.info.storePath} without storing it: ${refusal}`);
      return undefined;
    }
    const rel = tempName('nar', FILL_TEMP_SUFFIX);
    try {
      const fh = await open(join(this.deps.target.root, rel), 'wx', 0o644);
      this.tempRel = rel;
      this.storing = true;
      return fh;
    } catch (err) {
      this.stopStoring(err);
      return undefined;
    }
  }

  private async store(fh: FileHandle, chunk: Buffer): Promise<void> {
    try {
      for (let off = 0; off < chunk.length; ) off += (await fh.write(chunk, off)).bytesWritten;
      this.stored += chunk.length;
    } catch (err) {
      this.stopStoring(err);
      await this.dropTemp(fh);
      this.wake();
    }
  }

  /** Stops writing to disk (the clients are still served) and says why, once, in the log. */
  private stopStoring(err: unknown): string {
    const code = (err as NodeJS.ErrnoException).code;
    const reason = code === 'ENOSPC' ? `the disk is full (${errorMessage(err)})` : `cannot write to the cache: ${errorMessage(err)}`;
    this.storing = false;
    this.notStoredReason = reason;
    this.deps.log.error({ event: 'fill-not-stored', storePath: this.entry.info.storePath, code, reason }, `serving ${this.entry.info.storePath} without storing it: ${reason}`);
    return reason;
  }

  private async dropTemp(fh: FileHandle | undefined): Promise<void> {
    this.storing = false;
    await fh?.close().catch(() => {});
    if (this.tempRel) await unlink(join(this.deps.target.root, this.tempRel)).catch(() => {});
    this.tempRel = undefined;
  }

  private fail(code: Extract<DownloadResult, { status: 'failed' }>['code'], reason: string): DownloadResult {
    this.state = 'failed';
    for (const s of this.sinks) {
      // Never end a NAR short: a client that got a head gets a broken connection, one that did not gets a 5xx/404.
      if (s.res.headersSent) s.res.destroy();
      else writeRawError(s.res, new AppError(code === 'absent' ? 'NOT_IN_ANY_ORIGIN' : 'ORIGINS_UNAVAILABLE', reason));
    }
    this.sinks.clear();
    this.wake();
    return { status: 'failed', code, reason };
  }

  /** Hands a checked-so-far chunk to every client, waiting for slow ones (a client that hangs up is dropped). */
  private async release(chunk: Buffer): Promise<void> {
    const targets = [...this.sinks];
    this.released += chunk.length;
    this.wake();
    await Promise.all(
      targets.map(async ({ res }) => {
        if (res.destroyed) return;
        this.deps.stats.bytesToClients += chunk.length;
        if (!res.write(chunk)) await drainedOrGone(res);
      }),
    );
  }

  /** A client that came late: the bytes so far from the temporary file, then live. */
  private async tail(res: ServerResponse): Promise<void> {
    const path = join(this.deps.target.root, this.tempRel ?? this.entry.info.url);
    const fh = await open(path, 'r').catch(() => open(join(this.deps.target.root, this.entry.info.url), 'r')).catch(() => undefined);
    if (!fh) {
      res.destroy();
      return;
    }
    this.writeHead(res);
    const buf = Buffer.allocUnsafe(64 * 1024);
    let pos = 0;
    try {
      for (let guard = 0; guard < 1e7 && !res.destroyed; guard++) {
        const limit = this.complete ? this.released : Math.min(this.released, this.stored);
        if (pos < limit) {
          const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, limit - pos), pos);
          if (bytesRead === 0) throw new Error('temporary file is shorter than expected');
          pos += bytesRead;
          this.deps.stats.bytesToClients += bytesRead;
          if (!res.write(Buffer.from(buf.subarray(0, bytesRead)))) await drainedOrGone(res);
          continue;
        }
        if (this.complete) return void res.end();
        if (this.state === 'failed') return void res.destroy();
        if (pos === this.released) return this.addSink(res); // caught up: live from here
        if (!this.storing) return void res.destroy(); // the file stopped growing before this client caught up
        await new Promise<void>((resolve) => this.wakers.push(resolve));
      }
    } catch (err) {
      this.deps.log.warn({ storePath: this.entry.info.storePath, err: errorMessage(err) }, 'late client of a fill could not be served');
      res.destroy();
    } finally {
      await fh.close().catch(() => {});
    }
  }
}
