import { mkdir, open, statfs, unlink, type FileHandle } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { ByteBudget } from './byte-budget.js';

/**
 * Holding a NAR back until it is verified (docs/architecture.md, "A wrong NAR
 * on the Pi never reaches Nix"). Nix appends every byte it gets to the path
 * it is importing and checks the NarHash only at the end; a resume cannot
 * take a byte back, so one corrupt byte sent fails the command. A NAR from a
 * LAN cache or a peer, when another origin could serve it, is therefore held
 * whole (in memory within the NAR byte budget, or in a spool file) and sent
 * only once its NarSize and NarHash match.
 */
export interface Hold {
  readonly where: 'memory' | 'disk';
  /** The next bytes of the response, in order. */
  add(chunk: Buffer): Promise<void>;
  /** Hands every byte held, in order, to `send`. */
  replay(send: (chunk: Buffer) => Promise<void>): Promise<void>;
  /** Frees the memory or the spool file; safe to call more than once. */
  discard(): void;
}

/**
 * NARs larger than this are spooled rather than held in memory: a held NAR's
 * Buffers live long enough to reach V8's old generation and stay in RSS until
 * a full collection, while a spool file's reads die young (docs/benchmarks.md,
 * "Holding NARs back").
 */
export const MEMORY_HOLD_MAX = 2 * 1024 * 1024;

export interface HoldOptions {
  /** Where NARs too large for the memory budget are spooled ('' or undefined: nowhere; they are streamed). */
  spoolDir?: string | undefined;
  /** Bytes spooled at once, at most. */
  spoolBytes: number;
  /** The largest NAR held in memory (default MEMORY_HOLD_MAX); larger ones are spooled. */
  memoryMaxBytes?: number;
  /** Free space a spool file must leave on its filesystem. */
  spoolReserveBytes?: number;
  /** A spool file could not be made (the NAR is then streamed as it comes). */
  onSpoolError?: (err: unknown) => void;
}

const SPOOL_READ = 256 * 1024;

/**
 * Where NARs are spooled when `cache.spoolDir` is not given: systemd's
 * `$CACHE_DIRECTORY` (a unit with `CacheDirectory=`), else
 * `$XDG_CACHE_HOME/nix-lan-cache`, else `~/.cache/nix-lan-cache`; `spool` in it.
 */
export function defaultSpoolDir(env: NodeJS.ProcessEnv = process.env, home: string = homedir()): string {
  const systemd = env.CACHE_DIRECTORY?.split(':')[0];
  if (systemd) return join(systemd, 'spool');
  if (env.XDG_CACHE_HOME && env.XDG_CACHE_HOME.startsWith('/')) return join(env.XDG_CACHE_HOME, 'nix-lan-cache', 'spool');
  return join(home, '.cache', 'nix-lan-cache', 'spool');
}

class MemoryHold implements Hold {
  readonly where = 'memory';
  private chunks: Buffer[] = [];
  private done = false;

  constructor(private readonly free: () => void) {}

  async add(chunk: Buffer): Promise<void> {
    this.chunks.push(chunk);
  }

  async replay(send: (chunk: Buffer) => Promise<void>): Promise<void> {
    // Each chunk is let go once sent: memory shrinks as Nix reads.
    for (let c = this.chunks.shift(); c; c = this.chunks.shift()) await send(c);
  }

  discard(): void {
    if (this.done) return;
    this.done = true;
    this.chunks = [];
    this.free();
  }
}

/** A spool file, unlinked as soon as it is made: nothing is left behind, whatever ends the proxy. */
class SpoolHold implements Hold {
  readonly where = 'disk';
  private size = 0;
  private done = false;

  constructor(
    private readonly file: FileHandle,
    private readonly free: () => void,
  ) {}

  async add(chunk: Buffer): Promise<void> {
    let at = 0;
    while (at < chunk.length) at += (await this.file.write(chunk, at, chunk.length - at, this.size + at)).bytesWritten;
    this.size += chunk.length;
  }

  async replay(send: (chunk: Buffer) => Promise<void>): Promise<void> {
    for (let pos = 0; pos < this.size; ) {
      const buf = Buffer.allocUnsafe(Math.min(SPOOL_READ, this.size - pos));
      const { bytesRead } = await this.file.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) throw new Error(`spool file ended at ${pos} of ${this.size} bytes`);
      pos += bytesRead;
      await send(buf.subarray(0, bytesRead));
    }
  }

  discard(): void {
    if (this.done) return;
    this.done = true;
    void this.file.close().catch(() => {});
    this.free();
  }
}

/** Where NARs are held back: small ones in the memory budget, then the spool, else nowhere (streamed as they come). */
export class Holds {
  private spooled = 0;

  constructor(
    private readonly memory: ByteBudget,
    private readonly options: HoldOptions,
  ) {}

  /** A hold for `bytes` of response, or undefined when there is room nowhere. */
  async open(bytes: number): Promise<Hold | undefined> {
    if (bytes <= (this.options.memoryMaxBytes ?? MEMORY_HOLD_MAX) && this.memory.tryReserve(bytes)) return new MemoryHold(() => this.memory.release(bytes));
    return this.spool(bytes);
  }

  /** A hold in memory for bytes already reserved (a NAR fetched ahead: its reservation goes on covering them). */
  reserved(): Hold {
    return new MemoryHold(() => {});
  }

  private async spool(bytes: number): Promise<Hold | undefined> {
    const dir = this.options.spoolDir;
    if (!dir || this.spooled + bytes > this.options.spoolBytes) return undefined;
    this.spooled += bytes;
    const free = () => (this.spooled -= bytes);
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const fs = await statfs(dir);
      if (fs.bavail * fs.bsize < bytes + (this.options.spoolReserveBytes ?? 1024 ** 3)) throw new Error('not enough free space');
      const path = join(dir, `nar-${randomBytes(8).toString('hex')}.tmp`);
      const file = await open(path, 'wx+', 0o600);
      await unlink(path);
      return new SpoolHold(file, free);
    } catch (err) {
      free();
      this.options.onSpoolError?.(err);
      return undefined;
    }
  }
}
