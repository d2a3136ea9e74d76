import { EventEmitter } from 'node:events';
import type { Origin } from '../origins/origin.js';
import { discard } from '../origins/body.js';

export interface SlowMarkOptions {
  /** A mark no probe cleared ends after this long. */
  forMs: number;
  /** How often a marked LAN cache is probed. */
  probeEveryMs: number;
  /** A probe passes when the first `probeBytes` of a NAR file it has arrive within this long. */
  probeDeadlineMs: number;
  probeBytes: number;
}

/**
 * 64 KiB within a second: what any healthy Pi does on the poorest Wi-Fi, and
 * what a Pi left by the slow rule (under 100 KB/s over 5 s: ~650 ms for
 * 64 KiB), one that drips, hangs or refuses cannot. Probed every second, a
 * Pi that is back serves NARs again within about a second.
 */
export const DEFAULT_SLOW_MARKS: SlowMarkOptions = { forMs: 60_000, probeEveryMs: 1000, probeDeadlineMs: 1000, probeBytes: 64 * 1024 };

interface Mark {
  until: number;
  /** A NAR file the origin was too slow with: the probe reads its first bytes. */
  file: string | undefined;
  timer: NodeJS.Timeout | undefined;
  probing: boolean;
}

/**
 * Origins that were left for being too slow with a NAR (the slow rule, a
 * stalled body, no response head in time): tried last for NARs until their
 * mark ends. A LAN cache's or peer's mark ends as soon as it proves itself again: a
 * probe every second reads the first bytes of the NAR file it was slow with,
 * and when they come in time the mark is cleared and `back` is emitted (the
 * resolver then forgets answers found elsewhere while it was away). So a Pi
 * that comes back, whatever it did while away (refused, hung, crawled,
 * dripped), is used again within about a second. Upstreams are not probed
 * (there is nowhere faster to go); their marks just end.
 */
export class SlowMarks extends EventEmitter<{ back: [origin: Origin] }> {
  private readonly marks = new Map<Origin, Mark>();

  constructor(private readonly options: SlowMarkOptions = DEFAULT_SLOW_MARKS) {
    super();
  }

  mark(origin: Origin, file?: string): void {
    const existing = this.marks.get(origin);
    const mark: Mark = existing ?? { until: 0, file: undefined, timer: undefined, probing: false };
    mark.until = Date.now() + this.options.forMs;
    mark.file = file ?? mark.file;
    this.marks.set(origin, mark);
    if (origin.kind !== 'upstream' && mark.file && !mark.timer) {
      mark.timer = setInterval(() => void this.probe(origin, mark), this.options.probeEveryMs);
      mark.timer.unref();
    }
  }

  has(origin: Origin): boolean {
    const mark = this.marks.get(origin);
    if (!mark) return false;
    if (mark.until > Date.now()) return true;
    this.clear(origin);
    return false;
  }

  /** Stops every probe (the proxy is closing). */
  close(): void {
    for (const origin of [...this.marks.keys()]) this.clear(origin);
  }

  private clear(origin: Origin): void {
    const mark = this.marks.get(origin);
    if (mark?.timer) clearInterval(mark.timer);
    this.marks.delete(origin);
  }

  private async probe(origin: Origin, mark: Mark): Promise<void> {
    if (mark.probing || !mark.file) return;
    if (!this.has(origin)) return;
    mark.probing = true;
    try {
      if (await this.fast(origin, mark.file)) {
        if (this.marks.get(origin) !== mark) return;
        this.clear(origin);
        this.emit('back', origin);
      }
    } finally {
      mark.probing = false;
    }
  }

  /** Whether the first bytes of `file` arrive within the deadline; the response is destroyed either way. */
  private async fast(origin: Origin, file: string): Promise<boolean> {
    const { probeBytes, probeDeadlineMs } = this.options;
    const signal = AbortSignal.timeout(probeDeadlineMs);
    const res = await origin.fetchFile(file, { range: `bytes=0-${probeBytes - 1}`, signal });
    if (res.status !== 'present') return false;
    const length = Number(res.headers['content-length']);
    const want = Number.isFinite(length) && length > 0 ? Math.min(length, probeBytes) : probeBytes;
    let got = 0;
    try {
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        got += chunk.length;
        if (got >= want) return true;
      }
      return got >= want;
    } catch {
      return false;
    } finally {
      discard(res.body);
    }
  }
}
