import { readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { processAlive } from '../process-alive.js';
import { listFiles } from '../push/cachefiles.js';
import { TEMP_PREFIX } from '../push/target.js';
import { FILL_TEMP_SUFFIX } from './download.js';

/** Bytes of NARs and narinfos in a cache directory. */
export async function cacheBytes(dir: string): Promise<number> {
  const files = [...(await listFiles(dir, 'nar')), ...(await listFiles(dir, '')).filter((f) => f.rel.endsWith('.narinfo'))];
  return files.reduce((s, f) => s + f.size, 0);
}

/** The cache's size as fill knows it: counted at start, re-counted now and then (gc deletes behind fill's back), plus what fill stored since. */
export class CacheSize {
  bytes = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly count: () => Promise<number>) {}

  async start(recountMs: number): Promise<void> {
    this.bytes = await this.count();
    this.timer = setInterval(() => void this.count().then((b) => (this.bytes = b), () => {}), recountMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}

/** Removes the temporary NAR files of fill processes that died (SIGKILL, power cut); returns their names. */
export async function removeDeadFillTemps(dir: string): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await readdir(join(dir, 'nar')).catch(() => [] as string[])) {
    const m = new RegExp(`^${TEMP_PREFIX.replace('.', '\\.')}(\\d+)-.*${FILL_TEMP_SUFFIX.replace('.', '\\.')}$`).exec(name);
    if (!m || (Number(m[1]) !== process.pid && processAlive(Number(m[1])))) continue;
    await unlink(join(dir, 'nar', name)).then(() => removed.push(`nar/${name}`), () => {});
  }
  return removed;
}
