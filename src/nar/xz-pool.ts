import { availableParallelism } from 'node:os';
import { XzProcess, type XzProcessOptions } from './xz-process.js';

/** What a job's decoding ended with: the whole output, or why the file could not be decoded. */
export type XzResult = { ok: true; output: Buffer } | { ok: false; corrupt: boolean; message: string };

interface Job {
  input: Buffer | readonly Buffer[];
  maxOutput: number;
  cancelled: boolean;
  done(result: XzResult): void;
}

/** After `xz` could not be started, files are decoded in process for this long before it is tried again. */
const NO_XZ_MS = 60_000;

/**
 * Decodes small .xz files, each whole (the caller has the file in memory: at
 * most the small size it chose), so that a stalled origin never holds a
 * decoder. Files whose decoded size is known (their NarSize) go to long-lived
 * `xz -dc` processes (nar/xz-process.ts): native liblzma, on cores beside the
 * main thread, which answers Nix. A file such a process did not decode (xz
 * failed on it or on one written before it), a file of unknown size, and every
 * file while `xz` cannot be started, is decoded in process by xz-decompress
 * (WebAssembly) on the main thread, one at a time: its verdict is the file's.
 */
export class XzPool {
  private readonly processes: XzProcess[];
  private readonly queue: Job[] = [];
  private inProcess: Job | undefined;
  private noXzUntil = 0;

  constructor(processes: number, options: XzProcessOptions = {}) {
    const spawnFailed = () => (this.noXzUntil = Date.now() + NO_XZ_MS);
    this.processes = Array.from({ length: processes }, () => new XzProcess(spawnFailed, options));
  }

  /**
   * Decodes `input` (a whole .xz file, one Buffer or its pieces in order) to
   * at most `maxOutput` bytes; with `exactSize`, to exactly that many (else it
   * fails verification later). Never rejects.
   */
  decode(input: Buffer | readonly Buffer[], maxOutput: number, exactSize?: number): { result: Promise<XzResult>; cancel(): void } {
    let job!: Job;
    const result = new Promise<XzResult>((resolve) => {
      job = { input, maxOutput, cancelled: false, done: resolve };
    });
    const proc = exactSize !== undefined && exactSize <= maxOutput && Date.now() >= this.noXzUntil ? this.leastBusy() : undefined;
    if (proc) {
      proc.decode({
        input,
        size: exactSize!,
        done: (output) => {
          if (output) job.done({ ok: true, output });
          else if (!job.cancelled) this.enqueue(job); // not decoded there: decode it alone, for its own verdict
        },
      });
    } else this.enqueue(job);
    return {
      result,
      cancel: () => {
        // A waiting job is dropped; one being decoded finishes (a small file: milliseconds) and is thrown away.
        job.cancelled = true;
        const i = this.queue.indexOf(job);
        if (i >= 0) this.queue.splice(i, 1);
        job.done = () => {};
      },
    };
  }

  /** Ends the xz processes (tests; idle ones end by themselves). */
  close(): void {
    for (const p of this.processes) p.close();
  }

  private leastBusy(): XzProcess | undefined {
    let best: XzProcess | undefined;
    for (const p of this.processes) if (!best || p.pending < best.pending) best = p;
    return best;
  }

  private enqueue(job: Job): void {
    this.queue.push(job);
    this.pump();
  }

  private pump(): void {
    if (this.inProcess || !this.queue.length) return;
    const job = (this.inProcess = this.queue.shift()!);
    // The in-process decoder (WebAssembly) is loaded on first use: most proxies never need it.
    import('./xz-decode.js')
      .then(({ decodeWhole }) => decodeWhole(Buffer.isBuffer(job.input) ? job.input : Buffer.concat(job.input), job.maxOutput))
      .then(
        (output) => job.done({ ok: true, output }),
        (err: unknown) => job.done({ ok: false, corrupt: true, message: err instanceof Error ? err.message : String(err) }),
      )
      .finally(() => {
        this.inProcess = undefined;
        this.pump();
      });
  }
}

let shared: XzPool | undefined;
/**
 * The process's pool: an `xz` process per core, at least two, at most four.
 * Measured with real Nix on two cores (docs/dependencies.md): two processes
 * beat one at Nix's defaults and at `--max-jobs 16`, since NAR prefetch
 * fetches several files at once. Each process is a few MiB outside the
 * proxy's heap (xz allocates the file's dictionary, 8 MiB for `xz -6`, and
 * touches only as much as the file uses) and ends after 30 s without work.
 */
export function xzPool(): XzPool {
  return (shared ??= new XzPool(Math.min(4, Math.max(2, availableParallelism()))));
}
