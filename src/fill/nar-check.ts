import { spawn } from 'node:child_process';
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import * as zlib from 'node:zlib';
import { drainedOrGone } from './drain.js';
import type { Sha256 } from '../protocol/hash.js';
import type { NarInfo } from '../protocol/narinfo.js';
import { HashTap } from '../push/nar.js';

export class NarCheckError extends Error {
  override name = 'NarCheckError';
}

/**
 * Decompresses a NAR file as it streams past and hashes what comes out, so
 * NarHash and NarSize can be checked before the file is published. zstd is
 * decompressed in-process (Node's zlib); xz and bzip2 by the same tools
 * `verify --deep` uses.
 */
export class NarCheck {
  private readonly input: Writable;
  private readonly tap = new HashTap();
  private readonly finished: Promise<void>;
  private failure: Error | undefined;

  constructor(compression: string) {
    this.tap.resume();
    const tapEnded = once(this.tap, 'end').then(
      () => undefined,
      () => undefined, // recorded by the error listener below
    );
    const fail = (err: Error) => (this.failure ??= err);
    this.tap.on('error', fail);
    if (compression === 'none') {
      this.input = this.tap;
      this.finished = tapEnded;
    } else if (compression === 'zstd' && typeof (zlib as { createZstdDecompress?: unknown }).createZstdDecompress === 'function') {
      const z = (zlib as unknown as { createZstdDecompress(): NodeJS.ReadWriteStream & Writable }).createZstdDecompress();
      z.on('error', (err: Error) => fail(new NarCheckError(`zstd: ${err.message}`)));
      z.pipe(this.tap);
      this.input = z;
      this.finished = tapEnded;
    } else {
      const cmd = { xz: ['xz', '-dc'], zstd: ['zstd', '-dcq'], bzip2: ['bzip2', '-dc'] }[compression];
      if (!cmd) throw new NarCheckError(`unknown compression ${compression}`);
      const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-500)));
      // EPIPE on stdin when the decompressor gives up early: its exit status says why.
      child.stdin.on('error', () => {});
      child.on('error', (err) => fail(new NarCheckError(`${cmd[0]}: ${err.message}`)));
      child.stdout.on('error', fail);
      child.stdout.pipe(this.tap);
      const exited = new Promise<void>((resolve) =>
        child.on('close', (code, signal) => {
          if (code !== 0) fail(new NarCheckError(`${cmd[0]} ${signal ? `killed by ${signal}` : `exited ${code}`}: ${stderr.trim()}`));
          resolve();
        }),
      );
      this.input = child.stdin;
      this.finished = Promise.all([tapEnded, exited]).then(() => undefined);
      this.kill = () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      };
    }
    this.input.on('error', fail);
    // A failed decompressor never ends the tap: let `result` see the failure instead of waiting.
    this.finished = Promise.race([this.finished, new Promise<void>((resolve) => this.input.once('close', () => this.failure && resolve()))]);
  }

  /** Feeds the next chunk of the file; waits while the decompressor is behind. */
  async write(chunk: Buffer): Promise<void> {
    if (this.failure) return;
    if (!this.input.write(chunk)) await drainedOrGone(this.input);
  }

  /** Ends the input and returns what the file unpacks to; throws if it does not unpack. */
  async result(): Promise<{ narHash: Sha256; narSize: number }> {
    if (!this.failure) this.input.end();
    await this.finished;
    if (this.failure) throw this.failure;
    return { narHash: this.tap.digest, narSize: this.tap.bytes };
  }

  /** Stops decompressing (the download failed). */
  abort(): void {
    this.kill();
    this.input.destroy();
  }

  private kill: () => void = () => {};
}

/** What is wrong with a downloaded NAR file, measured against its signed narinfo; undefined if nothing. */
export function describeMismatch(
  info: Pick<NarInfo, 'fileHash' | 'fileSize' | 'narHash' | 'narSize'>,
  got: { fileHash: Sha256; fileSize: number; narHash?: Sha256 | undefined; narSize?: number | undefined; error?: string | undefined },
): string | undefined {
  if (got.error !== undefined) return `it does not unpack: ${got.error}`;
  if (got.fileHash !== info.fileHash) return `its FileHash is ${got.fileHash}, the narinfo says ${info.fileHash}`;
  if (info.fileSize !== undefined && got.fileSize !== info.fileSize) return `it has ${got.fileSize} bytes, FileSize says ${info.fileSize}`;
  if (got.narHash !== info.narHash || got.narSize !== info.narSize) return `it unpacks to ${got.narHash} (${got.narSize} bytes), the narinfo says ${info.narHash} (${info.narSize} bytes)`;
  return undefined;
}
