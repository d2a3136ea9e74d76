import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { sha256FromBytes, type Sha256 } from '../protocol/hash.js';

export type Compression = 'xz' | 'zstd';

export const COMPRESSIONS: Record<Compression, { ext: string; args: string[]; cmd: string; decompress: string[] }> = {
  xz: { cmd: 'xz', args: ['-c', '-T0', '-6'], ext: 'xz', decompress: ['xz', '-dc'] },
  zstd: { cmd: 'zstd', args: ['-c', '-q', '-T0', '-8'], ext: 'zst', decompress: ['zstd', '-dcq'] },
};

/** A pass-through stream that hashes (sha256) and counts what goes through it. */
export class HashTap extends Transform {
  private readonly hash = createHash('sha256');
  bytes = 0;
  private digestValue: Sha256 | undefined;

  constructor(private readonly onBytes?: (n: number) => void) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    this.onBytes?.(chunk.length);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    this.digestValue = sha256FromBytes(this.hash.digest());
    cb();
  }

  get digest(): Sha256 {
    if (!this.digestValue) throw new Error('stream not finished');
    return this.digestValue;
  }
}

export interface NarStream {
  /** The compressed NAR; consume it to the end. */
  output: Readable;
  /** Resolves once the output ended and both processes exited, with what went through. */
  done: Promise<{ fileHash: Sha256; fileSize: number; narHash: Sha256; narSize: number }>;
  /** Stops the subprocesses (on an upload error). */
  abort(): void;
}

function exitOf(child: ChildProcess, what: string, stderr: () => string): Promise<void> {
  return new Promise((resolve, reject) => {
    child.on('error', (err) => reject(new Error(`${what}: ${err.message}`)));
    child.on('close', (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`${what} ${signal ? `killed by ${signal}` : `exited ${code}`}${stderr() ? `: ${stderr().trim().slice(0, 500)}` : ''}`));
    });
  });
}

/**
 * `nix-store --dump PATH | <compressor>`, hashing the raw NAR and the
 * compressed file as they stream; nothing is held whole in memory.
 */
export function dumpCompressed(storePath: string, compression: Compression, onNarBytes?: (n: number) => void): NarStream {
  const c = COMPRESSIONS[compression];
  const dump = spawn('nix-store', ['--dump', storePath], { stdio: ['ignore', 'pipe', 'pipe'] });
  const comp = spawn(c.cmd, c.args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let dumpErr = '';
  let compErr = '';
  dump.stderr!.on('data', (d: Buffer) => (dumpErr += d.toString()));
  comp.stderr!.on('data', (d: Buffer) => (compErr += d.toString()));
  const narTap = new HashTap(onNarBytes);
  const fileTap = new HashTap();
  // An EPIPE on the compressor's stdin is reported through its exit status.
  comp.stdin!.on('error', () => {});
  narTap.on('error', () => {});
  dump.stdout!.pipe(narTap).pipe(comp.stdin!);
  comp.stdout!.pipe(fileTap);
  const narEnded = new Promise<void>((resolve) => narTap.on('end', resolve));
  const fileEnded = new Promise<void>((resolve, reject) => {
    fileTap.on('end', resolve);
    fileTap.on('error', reject);
  });
  const abort = () => {
    for (const child of [dump, comp]) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  const done = (async () => {
    try {
      await Promise.all([
        exitOf(dump, `nix-store --dump ${storePath}`, () => dumpErr),
        exitOf(comp, c.cmd, () => compErr),
        narEnded,
        fileEnded,
      ]);
    } catch (err) {
      abort();
      throw err;
    }
    return { fileHash: fileTap.digest, fileSize: fileTap.bytes, narHash: narTap.digest, narSize: narTap.bytes };
  })();
  done.catch(() => {});
  return { output: fileTap, done, abort };
}
