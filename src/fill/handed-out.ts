import { mkdir, readdir, readFile, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { errorMessage } from '../errors.js';
import { parseNarInfo } from '../protocol/narinfo.js';
import type { Origin } from '../origins/origin.js';
import type { FillEntry } from './entry.js';

/** Where fill remembers what it handed out, inside the cache (nginx serves no dot directory). */
export const HANDED_OUT_DIR = '.fill';
const KEEP_MS = 30 * 86_400_000;

interface Record {
  storeHash: string;
  origin: string;
  upstreamUrl: string;
  text: string;
}

/**
 * The narinfos fill handed out and has not published yet, by the FileHash
 * their URL names: a NAR request is answered from these. Kept in memory and
 * in `<cache>/.fill/`, so a fill restarted between a narinfo and its NAR
 * request (a crash, SIGKILL, an upgrade) still knows where the NAR comes
 * from: Nix keeps a narinfo for 30 days and asks for its NAR again.
 */
export class HandedOut {
  private readonly memory = new LRUCache<string, FillEntry>({ max: 100_000 });
  private readonly dir: string;

  constructor(
    cacheDir: string,
    private readonly upstreams: readonly Origin[],
    private readonly log: Logger,
  ) {
    this.dir = join(cacheDir, HANDED_OUT_DIR);
  }

  /** Creates the directory and forgets records older than 30 days. */
  async open(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const old = Date.now() - KEEP_MS;
    for (const name of await readdir(this.dir)) {
      const st = await stat(join(this.dir, name)).catch(() => undefined);
      if (st && st.mtimeMs < old) await unlink(join(this.dir, name)).catch(() => {});
    }
  }

  /** Remembers an entry; the disk write is best effort (a full disk only costs the restart case). */
  remember(digits: string, entry: FillEntry): void {
    const known = this.memory.has(digits);
    this.memory.set(digits, entry);
    if (known) return;
    const record: Record = { storeHash: entry.storeHash, origin: entry.origin.baseUrl, upstreamUrl: entry.upstreamUrl, text: entry.text };
    void writeFile(join(this.dir, digits), JSON.stringify(record), { mode: 0o644 }).catch((err: unknown) =>
      this.log.debug({ err: errorMessage(err), digits }, 'could not record a handed-out narinfo on disk'),
    );
  }

  async get(digits: string): Promise<FillEntry | undefined> {
    const inMemory = this.memory.get(digits);
    if (inMemory) return inMemory;
    const text = await readFile(join(this.dir, digits), 'utf8').catch(() => undefined);
    if (!text) return undefined;
    try {
      const r = JSON.parse(text) as Record;
      const origin = this.upstreams.find((o) => o.baseUrl === r.origin);
      if (!origin) return undefined; // that upstream is no longer configured
      const info = parseNarInfo(r.text);
      if (!info.fileHash || info.path.hash !== r.storeHash) return undefined;
      const entry: FillEntry = { storeHash: r.storeHash, info: { ...info, fileHash: info.fileHash }, text: r.text, origin, upstreamUrl: r.upstreamUrl };
      this.memory.set(digits, entry);
      return entry;
    } catch (err) {
      this.log.warn({ err: errorMessage(err), digits }, 'unreadable handed-out record; ignored');
      return undefined;
    }
  }

  /** The path is published: nginx serves it from now on. */
  forget(digits: string): void {
    this.memory.delete(digits);
    void unlink(join(this.dir, digits)).catch(() => {});
  }
}
