import { spawn } from 'node:child_process';
import { PassThrough, Writable, type Readable, type Transform } from 'node:stream';
import * as zlib from 'node:zlib';
import { xzPool } from './xz-pool.js';

/** Node ≥ 22.15 has zstd in zlib (@types/node 20 does not know it yet); older Node uses the `zstd` binary. */
const createZstdDecompress = (zlib as unknown as { createZstdDecompress?: (options?: { chunkSize?: number }) => Transform }).createZstdDecompress;

/**
 * A streaming decompressor: write the origin's file into `input`, read the
 * NAR from `output`. A decompression failure (corrupt input, missing binary)
 * destroys `output` with a `DecompressError`. `destroy()` stops it at once
 * (kills a spawned process) and is safe to call more than once.
 *
 * Chosen by measurement (docs/dependencies.md): zstd with Node's zlib (447 MiB/s
 * here, 0.2 ms per small NAR, no process); xz and bzip2 with the system's `xz`
 * and `bzip2` binaries (73 and 24 MiB/s, ~2.4 ms to spawn): a process runs on
 * another core and never takes a libuv threadpool thread from DNS lookups.
 * Small xz files (most paths of a closure) are gathered whole and decoded by
 * long-lived `xz` processes, file after file (nar/xz-pool.ts): spawning `xz`
 * for each cost 6 ms a path on a loaded machine.
 */
export interface Decompressor {
  input: Writable;
  output: Readable;
  destroy(): void;
}

export class DecompressError extends Error {
  override name = 'DecompressError';
  readonly code = 'NAR_DECOMPRESS';
}

const SPAWNED: Record<string, [string, ...string[]]> = {
  xz: ['xz', '-dc'],
  bzip2: ['bzip2', '-dc'],
  zstd: ['zstd', '-dcq'],
};

/** xz files up to this size are gathered whole and decoded in one go (nar/xz-pool.ts). */
const SMALL_XZ_BYTES = 256 * 1024;
/** The output of a pooled decode is handed on in pieces of this size. */
const OUT_CHUNK = 64 * 1024;
/** Without a NarSize, a small xz file may decode to at most this many times its size. */
const MAX_XZ_RATIO = 1024;

/**
 * undefined for a compression the proxy cannot read (e.g. `br`, or a
 * rewritten `../../x`). `fileSize`: the narinfo's FileSize, if any (unsigned:
 * a lie only changes which xz decoder runs; a file larger than it said is cut
 * off there, and the NAR then fails verification). `narSize`: the NarSize,
 * if known: a small xz file that decodes to more is not decoded further.
 */
export function createDecompressor(compression: string, fileSize?: number, narSize?: number): Decompressor | undefined {
  if (decodedWhole(compression, fileSize)) return pooledXz(fileSize, narSize);
  if (compression === 'none') {
    const pass = new PassThrough();
    return { input: pass, output: pass, destroy: () => pass.destroy() };
  }
  if (compression === 'zstd' && createZstdDecompress) return zlibFilter(() => createZstdDecompress({ chunkSize: zstdChunk(narSize) }), 'zstd');
  const cmd = Object.hasOwn(SPAWNED, compression) ? SPAWNED[compression] : undefined;
  return cmd ? spawnFilter(cmd) : undefined;
}

/**
 * zlib hands out its output in pieces of `chunkSize` (16 KiB by default), each
 * a separate allocation that a NAR fetched ahead keeps until Nix comes: many
 * small pieces fragment glibc's heap, which then holds on to the memory. A
 * piece the size of the NAR (64 KiB to 1 MiB) is one allocation, and from
 * 32 KiB on it is mapped on its own and given back when freed
 * (MALLOC_MMAP_THRESHOLD_, cli/memory.ts).
 */
function zstdChunk(narSize: number | undefined): number {
  return Math.min(1 << 20, Math.max(64 * 1024, narSize ?? 0));
}

/** A zlib stream as a filter; its failing destroys `output` with a DecompressError that starts with `label`. */
export function zlibFilter(create: () => Transform, label: string): Decompressor {
  const z = create();
  const out = new PassThrough();
  z.on('error', (err: Error) => out.destroy(new DecompressError(`${label}: ${err.message}`)));
  z.pipe(out);
  return {
    input: z,
    output: out,
    destroy: () => {
      z.destroy();
      out.destroy();
    },
  };
}

/** A process as a stream filter: bytes into its stdin, its stdout out; it failing (or missing) destroys `output` with a DecompressError. */
export function spawnFilter([cmd, ...args]: [string, ...string[]]): Decompressor {
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const out = new PassThrough();
  let stderr = '';
  let failed = false;
  const fail = (message: string) => {
    if (failed) return;
    failed = true;
    out.destroy(new DecompressError(message));
  };
  child.on('error', (err) => fail(`cannot run ${cmd}: ${err.message}`));
  // EPIPE when the process exits before it read everything: its exit status says why.
  child.stdin.on('error', () => {});
  child.stdout.on('error', () => {});
  child.stderr.on('data', (d: Buffer) => {
    if (stderr.length < 2000) stderr += d.toString();
  });
  child.stdout.pipe(out, { end: false });
  child.on('close', (code, signal) => {
    if (code === 0) out.end();
    else fail(`${cmd} ${signal ? `killed by ${signal}` : `exited ${code}`}${stderr.trim() ? `: ${stderr.trim().split('\n')[0]}` : ''}`);
  });
  return {
    input: child.stdin,
    output: out,
    destroy: () => {
      failed = true;
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      out.destroy();
    },
  };
}

/** Whether a file is small enough to be gathered whole and decoded in one go by the xz pool (nar/xz-pool.ts). */
export function decodedWhole(compression: string, fileSize: number | undefined): fileSize is number {
  return compression === 'xz' && fileSize !== undefined && fileSize <= SMALL_XZ_BYTES;
}

/**
 * Decodes a whole small .xz file (the pieces it arrived in, in order) with
 * the xz pool. `narSize`, when known, is exactly what the file must decode
 * to; without it, at most MAX_XZ_RATIO times its size. A file that cannot be
 * decoded ends in a DecompressError.
 */
export function decodeSmallXz(parts: readonly Buffer[], fileSize: number, narSize: number | undefined): { result: Promise<Buffer>; cancel(): void } {
  const decoding = xzPool().decode(parts, narSize ?? fileSize * MAX_XZ_RATIO, narSize);
  return {
    result: decoding.result.then((r) => {
      if (r.ok) return r.output;
      throw r.corrupt ? new DecompressError(`xz: ${r.message}`) : new Error(r.message);
    }),
    cancel: decoding.cancel,
  };
}

/** decodeSmallXz as a streaming Decompressor: the whole (small) file is gathered, then decoded in one go (a stalled origin never holds the decoder); past the size promised, stop and let verification fail. */
function pooledXz(fileSize: number, narSize: number | undefined): Decompressor {
  const out = new PassThrough();
  const parts: Buffer[] = [];
  let received = 0;
  let decoding: ReturnType<typeof decodeSmallXz> | undefined;
  const fail = (err: Error) => out.destroy(err instanceof DecompressError ? err : new DecompressError(`xz: ${err.message}`));
  const input = new Writable({
    write(chunk: Buffer, _enc, done) {
      received += chunk.length;
      if (received > fileSize) return done(new DecompressError(`xz file larger than its FileSize (${fileSize})`));
      parts.push(chunk);
      done();
    },
    final(done) {
      decoding = decodeSmallXz(parts.splice(0), fileSize, narSize);
      decoding.result.then((output) => {
        if (out.destroyed) return;
        for (let at = 0; at < output.length; at += OUT_CHUNK) out.write(output.subarray(at, at + OUT_CHUNK));
        out.end();
      }, (err: Error) => {
        if (!out.destroyed) out.destroy(err);
      });
      done();
    },
  });
  input.on('error', fail);
  return {
    input,
    output: out,
    destroy: () => {
      decoding?.cancel();
      input.destroy();
      out.destroy();
    },
  };
}
