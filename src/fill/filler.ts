import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { errorMessage } from '../errors.js';
import { sha256Digits } from '../protocol/hash.js';
import { formatBytes } from '../format.js';
import type { Origin } from '../origins/origin.js';
import { Semaphore } from '../push/limit.js';
import type { CacheSize } from './cache-size.js';
import { NarDownload, type DownloadResult } from './download.js';
import type { FillEntry } from './entry.js';
import { lookupUpstreams, type UpstreamLookup } from './lookup.js';
import { HandedOut } from './handed-out.js';
import type { FillStats } from './stats.js';
import type { FillStore } from './store.js';

export interface FillerDeps {
  target: FillStore;
  upstreams: readonly Origin[];
  stats: FillStats;
  log: Logger;
  size: CacheSize;
  maxSize: number | undefined;
  /** Downloads fill starts itself (references nobody asked for yet) at a time. */
  backgroundJobs?: number;
}

export type NarInfoAnswer = { status: 'found'; text: string; source: 'cache' | 'upstream' } | Exclude<UpstreamLookup, { status: 'found' }>;

/**
 * The fill service's state: what it handed out, the downloads running, and
 * the publishing of narinfos. A narinfo is published only after its NAR is
 * in place and after the narinfos of its references (fill fetches missing
 * references itself), so, as with push, a visible narinfo always has its
 * whole closure in the cache.
 */
export class Filler {
  private readonly lookups = new Map<string, Promise<UpstreamLookup>>();
  private readonly downloads = new Map<string, NarDownload>();
  private readonly fills = new Map<string, Promise<void>>();
  /**
   * NAR files that failed their check (by FileHash): for an hour, their
   * narinfo is a miss and the file a 404, so the laptops' proxies take the
   * path from another cache instead of this broken copy.
   */
  private readonly badNars = new LRUCache<string, string>({ max: 10_000, ttl: 3600_000 });
  /** Paths a download just could not store (disk full, over max size): not downloaded again for a while as someone's reference. */
  private readonly notStored = new LRUCache<string, string>({ max: 10_000, ttl: 600_000 });
  private readonly background: Semaphore;
  private closing = false;

  private readonly handedOut: HandedOut;

  constructor(private readonly deps: FillerDeps) {
    this.background = new Semaphore(deps.backgroundJobs ?? 4);
    this.handedOut = new HandedOut(deps.target.root, deps.upstreams, deps.log);
  }

  async open(): Promise<void> {
    await this.handedOut.open();
  }

  private async stored(rel: string): Promise<boolean> {
    return (await this.deps.target.file(rel).catch(() => undefined)) !== undefined;
  }

  /** A narinfo miss at nginx: the one already published (a race with a fill), or upstream's, signed and rewritten. */
  async narinfo(storeHash: string): Promise<NarInfoAnswer> {
    const onDisk = await this.deps.target.readNarInfo(storeHash).catch(() => undefined);
    if (onDisk) return { status: 'found', text: onDisk, source: 'cache' };
    const found = await this.lookup(storeHash);
    if (found.status !== 'found') return found;
    const { entry } = found;
    const bad = this.badNars.get(sha256Digits(entry.info.fileHash));
    if (bad) {
      this.deps.log.info({ storeHash, reason: bad }, 'narinfo answered as a miss: its NAR failed its check a moment ago');
      return { status: 'missing' };
    }
    this.handedOut.remember(sha256Digits(entry.info.fileHash), entry);
    // The NAR is already here (a fill whose references failed last time): publish without downloading it again.
    if (await this.stored(entry.info.url)) void this.fill(storeHash, entry).catch(() => {});
    return { status: 'found', text: entry.text, source: 'upstream' };
  }

  /** The path whose narinfo named this NAR file, if fill handed one out. */
  entryForNar(fileHashDigits: string): Promise<FillEntry | undefined> {
    return this.handedOut.get(fileHashDigits);
  }

  /** Why this NAR file is not served for now, if it failed its check. */
  badNar(fileHashDigits: string): string | undefined {
    return this.badNars.get(fileHashDigits);
  }

  /** The running download of a NAR, or a new one; a stored NAR gets its narinfo published once its references are. */
  download(entry: FillEntry): NarDownload {
    const running = this.downloads.get(entry.storeHash);
    if (running) return running;
    const dl = new NarDownload(entry, {
      target: this.deps.target,
      stats: this.deps.stats,
      log: this.deps.log,
      storeRefusal: () => this.storeRefusal(entry),
    });
    this.downloads.set(entry.storeHash, dl);
    void dl.done.then((result) => {
      this.downloads.delete(entry.storeHash);
      if (result.status === 'failed' && result.code === 'hash-mismatch') this.badNars.set(sha256Digits(entry.info.fileHash), result.reason);
      if (result.status === 'not-stored') this.notStored.set(entry.storeHash, result.reason);
      if (result.status === 'stored') {
        this.deps.size.bytes += result.fileSize;
        if (!this.closing) void this.fill(entry.storeHash, entry).catch(() => {});
      }
    });
    return dl;
  }

  private storeRefusal(entry: FillEntry): string | undefined {
    const { maxSize, size } = this.deps;
    if (maxSize === undefined) return undefined;
    const after = size.bytes + (entry.info.fileSize ?? 0);
    return after > maxSize ? `the cache would grow to ${formatBytes(after)}, over its --max-size of ${formatBytes(maxSize)} (gc --max-size makes room)` : undefined;
  }

  /**
   * Makes `<storeHash>.narinfo` exist: downloads the NAR unless it is in place,
   * fills missing references the same way, then publishes. One fill per path at a time.
   */
  fill(storeHash: string, entry?: FillEntry): Promise<void> {
    let running = this.fills.get(storeHash);
    if (!running) {
      running = this.fillOnce(storeHash, entry).finally(() => this.fills.delete(storeHash));
      this.fills.set(storeHash, running);
      running.catch((err: unknown) => {
        this.deps.stats.publishFailures++;
        this.deps.log.warn({ event: 'fill-not-published', storeHash, err: errorMessage(err) }, `${storeHash}.narinfo not published: ${errorMessage(err)}`);
      });
    }
    return running;
  }

  private async fillOnce(storeHash: string, given?: FillEntry): Promise<void> {
    if ((await this.deps.target.existingNarInfos([storeHash], true)).has(storeHash)) return;
    if (this.closing) throw new Error('fill is shutting down');
    let entry = given;
    if (!entry) {
      const found = await this.lookup(storeHash);
      if (found.status !== 'found') throw new Error(found.status === 'missing' ? 'no upstream has a trusted narinfo for it' : `upstreams unreachable: ${found.unknown.join('; ')}`);
      entry = found.entry;
    }
    if (!(await this.stored(entry.info.url))) {
      const bad = this.badNars.get(sha256Digits(entry.info.fileHash));
      if (bad) throw new Error(`its NAR failed its check a moment ago: ${bad}`);
      const notStored = this.notStored.get(storeHash);
      if (notStored) throw new Error(`its NAR could not be stored a moment ago: ${notStored}`);
      const e = entry;
      const result: DownloadResult = this.downloads.has(storeHash) ? await this.downloads.get(storeHash)!.done : await this.background.use(() => this.download(e).done);
      if (result.status !== 'stored') throw new Error(result.status === 'failed' ? `NAR ${result.code}: ${result.reason}` : `NAR not stored: ${result.reason}`);
      // The download's own completion publishes (it calls fill, which is this one).
    }
    const refs = entry.info.references.map((r) => r.slice(0, 32)).filter((h) => h !== storeHash);
    const settled = await Promise.allSettled(refs.map((h) => this.fill(h)));
    const failed = settled.findIndex((s) => s.status === 'rejected');
    if (failed >= 0) throw new Error(`its reference ${entry.info.references.filter((r) => r.slice(0, 32) !== storeHash)[failed]} could not be filled`);
    await this.deps.target.publishNarInfo(storeHash, entry.text, entry.info.url);
    this.handedOut.forget(sha256Digits(entry.info.fileHash));
    this.deps.stats.pathsFilled++;
    this.deps.stats.bytesFilled += entry.info.fileSize ?? 0;
    this.deps.log.info({ event: 'filled', storePath: entry.info.storePath, origin: entry.origin.name, fileSize: entry.info.fileSize }, `filled ${entry.info.storePath}`);
  }

  private lookup(storeHash: string): Promise<UpstreamLookup> {
    let pending = this.lookups.get(storeHash);
    if (!pending) {
      pending = lookupUpstreams(this.deps.upstreams, storeHash, this.deps.stats, this.deps.log, this.deps.target.dotlessNames).finally(() => this.lookups.delete(storeHash));
      this.lookups.set(storeHash, pending);
    }
    return pending;
  }

  /** Stops every download (their temporary files are removed) and waits for them and for running publishes. */
  async close(): Promise<void> {
    this.closing = true;
    for (const dl of this.downloads.values()) dl.abort();
    await Promise.allSettled([...this.downloads.values()].map((d) => d.done));
    await Promise.allSettled([...this.fills.values()]);
  }
}
