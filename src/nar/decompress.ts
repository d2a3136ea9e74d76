import { spawn } from 'node:child_process';
import { PassThrough, type Readable, type Transform, type Writable } from 'node:stream';
import * as zlib from 'node:zlib';

/** Node ≥ 22.15 has zstd in zlib (@types/node 20 does not know it yet); older Node uses the `zstd` binary. */
const createZstdDecompress = (zlib as unknown as { createZstdDecompress?: () => Transform }).createZstdDecompress;

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

/** The compressions an origin's NAR file may have; anything else means that origin cannot serve it. */
export const SUPPORTED_COMPRESSIONS: readonly string[] = ['none', 'xz', 'zstd', 'bzip2'];

/** undefined for a compression the proxy cannot read (e.g. `br`, or a rewritten `../../x`). */
export function createDecompressor(compression: string): Decompressor | undefined {
  if (compression === 'none') {
    const pass = new PassThrough();
    return { input: pass, output: pass, destroy: () => pass.destroy() };
  }
  if (compression === 'zstd' && createZstdDecompress) return zstd(createZstdDecompress);
  const cmd = Object.hasOwn(SPAWNED, compression) ? SPAWNED[compression] : undefined;
  return cmd ? spawned(cmd) : undefined;
}

function zstd(create: () => Transform): Decompressor {
  const z = create();
  const out = new PassThrough();
  z.on('error', (err: Error) => out.destroy(new DecompressError(`zstd: ${err.message}`)));
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

function spawned([cmd, ...args]: [string, ...string[]]): Decompressor {
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
