import { availableParallelism } from 'node:os';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

type DecodeWhole = (input: Buffer, maxOutput: number) => Promise<Uint8Array>;
/** The decoder the threads run too (xz-decode.cjs), loaded on the main thread only when it decodes there. */
let mainThreadDecoder: DecodeWhole | undefined;

/** What a job's decoding ended with: the whole output, or why the file could not be decoded. */
export type XzResult = { ok: true; output: Buffer } | { ok: false; corrupt: boolean; message: string };

interface Job {
  id: number;
  input: Buffer;
  maxOutput: number;
  done(result: XzResult): void;
}

interface Thread {
  worker: Worker;
  job: Job | undefined;
}

/**
 * Decodes small .xz files on worker threads, so that decompression runs
 * beside the main thread instead of in its way: xz is slow to decode (about
 * 25 MB/s for text, natively or in WebAssembly), and the main thread answers
 * Nix. Whole files only (the caller has the file in memory: at most the small
 * size it chose), one at a time per thread; jobs wait in a FIFO queue. Threads
 * start on first use and stop after a quiet while; they keep the process
 * alive only while they have a job. With `size` 0 there are no threads: the
 * files are decoded on the main thread, one at a time, from the same queue.
 */
export class XzPool {
  private readonly threads: Thread[] = [];
  private readonly queue: Job[] = [];
  private nextId = 1;
  private idleTimer: NodeJS.Timeout | undefined;
  /** Decoding on the main thread (size 0): the job being decoded. */
  private inline: Job | undefined;

  constructor(
    readonly size: number,
    private readonly idleMs = 30_000,
  ) {}

  /** Decodes `input` (a whole .xz file) to at most `maxOutput` bytes. Never rejects. */
  decode(input: Buffer, maxOutput: number): { result: Promise<XzResult>; cancel(): void } {
    let job!: Job;
    const result = new Promise<XzResult>((resolve) => {
      job = { id: this.nextId++, input, maxOutput, done: resolve };
    });
    this.queue.push(job);
    this.pump();
    return {
      result,
      cancel: () => {
        // A queued job is dropped; a running one finishes on its thread (a small file: milliseconds) and is thrown away.
        const i = this.queue.indexOf(job);
        if (i >= 0) this.queue.splice(i, 1);
        job.done = () => {};
      },
    };
  }

  /** Stops every thread (tests; the process exits without it). */
  async close(): Promise<void> {
    clearTimeout(this.idleTimer);
    const threads = this.threads.splice(0);
    await Promise.all(threads.map((t) => t.worker.terminate()));
  }

  private pump(): void {
    clearTimeout(this.idleTimer);
    if (this.size === 0) return this.pumpInline();
    while (this.queue.length) {
      let thread = this.threads.find((t) => !t.job);
      if (!thread && this.threads.length < this.size) thread = this.spawn();
      if (!thread) return;
      const job = this.queue.shift()!;
      thread.job = job;
      thread.worker.ref(); // a job keeps the process alive until its answer; an idle thread does not
      thread.worker.postMessage({ id: job.id, input: job.input, maxOutput: job.maxOutput });
    }
    if (this.threads.every((t) => !t.job)) {
      this.idleTimer = setTimeout(() => void this.close(), this.idleMs);
      this.idleTimer.unref();
    }
  }

  private pumpInline(): void {
    if (this.inline || !this.queue.length) return;
    const job = (this.inline = this.queue.shift()!);
    mainThreadDecoder ??= (createRequire(import.meta.url)('./xz-decode.cjs') as { decodeWhole: DecodeWhole }).decodeWhole;
    mainThreadDecoder(job.input, job.maxOutput).then(
      (out) => job.done({ ok: true, output: Buffer.from(out.buffer, out.byteOffset, out.byteLength) }),
      (err: unknown) => job.done({ ok: false, corrupt: true, message: err instanceof Error ? err.message : String(err) }),
    ).finally(() => {
      this.inline = undefined;
      this.pumpInline();
    });
  }

  private spawn(): Thread {
    const worker = new Worker(new URL('./xz-worker.cjs', import.meta.url), {
      // The thread's JavaScript holds one file and its output at a time; its decoder's memory is WebAssembly's, outside these.
      resourceLimits: { maxYoungGenerationSizeMb: 2, maxOldGenerationSizeMb: 32 },
    });
    const thread: Thread = { worker, job: undefined };
    worker.on('message', (m: { id: number; output?: Uint8Array; error?: string }) => {
      const job = thread.job;
      thread.job = undefined;
      worker.unref();
      if (job?.id === m.id) job.done(m.output ? { ok: true, output: Buffer.from(m.output.buffer, m.output.byteOffset, m.output.byteLength) } : { ok: false, corrupt: true, message: m.error ?? 'unknown error' });
      this.pump();
    });
    // A thread that dies (out of memory, a bug) fails its job as not the file's fault; the next job starts a new thread.
    const lost = (why: string) => {
      const i = this.threads.indexOf(thread);
      if (i < 0) return;
      this.threads.splice(i, 1);
      thread.job?.done({ ok: false, corrupt: false, message: `xz decoder thread ${why}` });
      thread.job = undefined;
      this.pump();
    };
    worker.on('error', (err) => lost(`failed: ${err.message}`));
    worker.on('exit', (code) => lost(`exited (${code})`));
    worker.unref(); // after the listeners (adding a 'message' listener refs it again); ref'd while it has a job
    this.threads.push(thread);
    return thread;
  }
}

let shared: XzPool | undefined;
/**
 * The process's pool: a thread per core but two (one for the main thread,
 * one for Nix, which unpacks what the proxy decodes), at most two; none on
 * two cores, where files are decoded on the main thread. Each thread costs
 * ~20 MiB (a V8 isolate and the decoder's WebAssembly memory, which holds the
 * file's dictionary). Measured with real Nix on two cores (docs/dependencies.md):
 * one thread was 3% faster than none for 15–20 MiB more peak memory, two 13%
 * faster for 35–40 MiB more.
 */
export function xzPool(): XzPool {
  return (shared ??= new XzPool(Math.min(2, Math.max(0, availableParallelism() - 2))));
}
