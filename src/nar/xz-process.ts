import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { Readable, Writable } from 'node:stream';
import { storedXzStream } from './xz-format.js';

/**
 * .xz streams that decode to zero bytes (`head -c N /dev/zero | xz -0
 * --check=none`), 8 KiB and 64 KiB. `xz -dc` writes its output a buffer at a
 * time (8 KiB in xz 5.4) and keeps the rest until more comes: the pad after
 * every file pushes the file's last bytes (and the mark after them) out of xz.
 * 8 KiB is the least that does (checked with xz 5.4.1 for files of 1 byte to
 * 100 kB); it was 16 KiB, and each file's pad costs its bytes through both
 * pipes and into the proxy's memory.
 */
const PAD_8K = Buffer.from(
  '/Td6WFoAAAD/EtlBAgAhAQwAAACPmEGc4B//ACddAABv/f//o7f/Rz5IFXI5YVG4kijmo4YH+e7kHoLTL8U6PAFFmN5/AAAAAAE7gEAAAAAcyxqHqAAK/AIAAAAAAFla',
  'base64',
);
const PAD_64K = Buffer.from(
  '/Td6WFoAAAD/EtlBAgAhAQwAAACPmEGc4P//AExdAABv/f//o7f/Rz5IFXI5YVG4kijmo4YH+e7kHoLTL8U6PAFLsX7JiopNL6MN2X+m44wjEVPgWRjFdYrid/i2lH8MasDedElkXJ460QAAAAFggIAEAADydReQqAAK/AIAAAAAAFla',
  'base64',
);
/**
 * Stream Padding (null bytes, allowed between .xz streams), as long as the
 * pad it follows: `xz` reads its input a buffer at a time and waits for a
 * full one, so a file and its pad are read only once enough bytes follow.
 */
const TAIL = { pad: 8192, stream: PAD_8K };
/**
 * When a file's output has not come whole `FLUSH_MS` after the last byte in
 * or out (an xz with larger buffers than 5.4's), a flush follows: an empty
 * file with its mark and the 64 KiB pad, framed like any other.
 */
const FLUSH = { pad: 65536, stream: PAD_64K };
const FLUSH_MS = 20;
const MAX_FLUSHES = 4;
const MARK_BYTES = 32;

export interface StreamJob {
  /** The whole .xz file, as one Buffer or the pieces it arrived in. */
  input: Buffer | readonly Buffer[];
  /** The exact size the file decodes to (its NarSize). */
  size: number;
  /** The output; undefined when this process did not decode it (the caller decodes it alone to learn why). */
  done(output: Buffer | undefined): void;
}

export interface XzProcessOptions {
  /** An idle process ends after this long. */
  idleMs?: number;
  /** No output for this long while files are in flight: the process is dropped. */
  stallMs?: number;
  /** The pad after every file (tests turn it off to see flushes alone bring files out). */
  padAfterFiles?: boolean;
}

type Child = ChildProcessByStdio<Writable, Readable, Readable>;

/**
 * One long-lived `xz -dc` that decodes whole small .xz files written to its
 * stdin one after the other (xz decodes concatenated streams into one
 * output). A closure of small paths costs one process instead of one per
 * path, and the decoding runs on a core of its own, beside the proxy's main
 * thread and Nix.
 *
 * Framing: after every file the process writes a mark (a stored .xz stream
 * of 32 random bytes, new for each process), the pad and input padding. A
 * file is done when its size has come out followed by the mark: a file that
 * decodes to more or less than its size cannot fake a mark it never saw. If
 * xz fails (a corrupt or truncated file), a mark is wrong, or no output comes
 * for `stallMs`, the process is dropped and every file it had not finished is
 * handed back undecoded (never blamed): the caller decodes each alone. The
 * next file starts a new process.
 */
export class XzProcess {
  private child: Child | undefined;
  private mark: Buffer = Buffer.alloc(0);
  private tail: Buffer = Buffer.alloc(0);
  private flushTail: Buffer = Buffer.alloc(0);
  /** Files written to xz whose output has not come whole, in order; a flush has no job. */
  private readonly inFlight: Array<{ job?: StreamJob; size: number; pad: number }> = [];
  /** Files (not flushes) in flight. */
  private files = 0;
  private parts: Buffer[] = [];
  private got = 0;
  /** Mark bytes of the head job seen so far. */
  private marked = 0;
  /** Pad bytes still to skip before the next file's output. */
  private skip = 0;
  private idleTimer: NodeJS.Timeout | undefined;
  private stallTimer: NodeJS.Timeout | undefined;
  private flushTimer: NodeJS.Timeout | undefined;

  private readonly idleMs: number;
  private readonly stallMs: number;
  private readonly padAfterFiles: boolean;

  constructor(
    private readonly onSpawnError: (err: Error) => void = () => {},
    options: XzProcessOptions = {},
  ) {
    this.idleMs = options.idleMs ?? 30_000;
    this.stallMs = options.stallMs ?? 5_000;
    this.padAfterFiles = options.padAfterFiles ?? true;
  }

  /** Files written and not yet finished. */
  get pending(): number {
    return this.files;
  }

  decode(job: StreamJob): void {
    clearTimeout(this.idleTimer);
    const child = (this.child ??= this.start());
    if (!this.files) {
      hold(child, true);
      this.stallTimer = setTimeout(() => this.fail(child), this.stallMs);
      this.flushTimer = setTimeout(() => this.flush(child), FLUSH_MS);
    }
    this.files++;
    this.inFlight.push({ job, size: job.size, pad: this.padAfterFiles ? TAIL.pad : 0 });
    // One writev for the file and its tail.
    child.stdin.cork();
    if (Buffer.isBuffer(job.input)) child.stdin.write(job.input);
    else for (const part of job.input) child.stdin.write(part);
    child.stdin.write(this.tail);
    child.stdin.uncork();
    this.flushTimer?.refresh();
  }

  /**
   * Pushes out what xz holds back, while a file is in flight and nothing has
   * moved for FLUSH_MS; at most MAX_FLUSHES not yet out (an xz starved of CPU
   * is not fed more), after which the stall time decides.
   */
  private flush(child: Child): void {
    if (this.child !== child || !this.files) return;
    this.flushTimer?.refresh();
    if (this.inFlight.length - this.files >= MAX_FLUSHES) return;
    this.inFlight.push({ size: 0, pad: FLUSH.pad });
    child.stdin.write(this.flushTail);
  }

  /** Ends the process; files not finished are handed back. */
  close(): void {
    clearTimeout(this.idleTimer);
    this.fail(this.child);
  }

  private start(): Child {
    const child = spawn('xz', ['-dc'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const mark = randomBytes(MARK_BYTES);
    this.mark = mark;
    const marked = storedXzStream(mark);
    this.tail = this.padAfterFiles ? Buffer.concat([marked, TAIL.stream, Buffer.alloc(TAIL.pad)]) : marked;
    this.flushTail = Buffer.concat([marked, FLUSH.stream, Buffer.alloc(FLUSH.pad)]);
    this.parts = [];
    this.got = this.marked = this.skip = 0;
    child.stdout.on('data', (chunk: Buffer) => {
      if (this.child === child) this.take(chunk);
    });
    child.stdin.on('error', () => this.fail(child)); // EPIPE: xz exited; 'exit' says so too
    child.stdout.on('error', () => this.fail(child));
    child.stderr.on('error', () => {});
    child.stderr.resume();
    child.on('error', (err) => {
      this.onSpawnError(err);
      this.fail(child);
    });
    child.on('exit', () => this.fail(child));
    return child;
  }

  /** Cuts xz's output into the files' outputs, checking the mark after each. */
  private take(chunk: Buffer): void {
    this.stallTimer?.refresh();
    this.flushTimer?.refresh();
    let at = 0;
    while (at < chunk.length) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - at);
        this.skip -= n;
        at += n;
        continue;
      }
      const head = this.inFlight[0];
      if (!head) return this.fail(this.child); // output no file was written for
      if (this.got < head.size) {
        const n = Math.min(head.size - this.got, chunk.length - at);
        this.parts.push(chunk.subarray(at, at + n));
        this.got += n;
        at += n;
        continue;
      }
      const n = Math.min(MARK_BYTES - this.marked, chunk.length - at);
      if (!chunk.subarray(at, at + n).equals(this.mark.subarray(this.marked, this.marked + n))) return this.fail(this.child);
      this.marked += n;
      at += n;
      if (this.marked === MARK_BYTES) this.finish();
    }
  }

  private finish(): void {
    const { job, size, pad } = this.inFlight.shift()!;
    // A copy of its own: a slice would keep xz's whole 64 KiB read chunks alive beside it, past the byte budget that counts NarSize.
    const out = job ? Buffer.concat(this.parts, size) : undefined;
    this.parts = [];
    this.got = this.marked = 0;
    this.skip = pad;
    if (!job) return;
    if (--this.files === 0) this.idle();
    job.done(out);
  }

  private idle(): void {
    const child = this.child;
    clearTimeout(this.stallTimer);
    clearTimeout(this.flushTimer);
    if (!child) return;
    hold(child, false);
    this.idleTimer = setTimeout(() => {
      if (this.child === child && !this.files) this.fail(child);
    }, this.idleMs);
    this.idleTimer.unref();
  }

  /** Drops the process; every file not finished is handed back undecoded. */
  private fail(child: Child | undefined): void {
    if (!child || this.child !== child) return;
    this.child = undefined;
    clearTimeout(this.stallTimer);
    clearTimeout(this.flushTimer);
    child.kill('SIGKILL');
    const jobs = this.inFlight.splice(0);
    this.files = 0;
    this.parts = [];
    for (const j of jobs) j.job?.done(undefined);
  }
}

/** Whether the process and its pipes keep Node's event loop alive: while files are in flight only. */
function hold(child: Child, on: boolean): void {
  for (const h of [child, child.stdin, child.stdout, child.stderr] as unknown as Array<{ ref?(): void; unref?(): void }>) (on ? h.ref : h.unref)?.call(h);
}
