import { createDecompressor, DecompressError, type Decompressor } from '../nar/decompress.js';
import { drainedOrGone } from './drain.js';
import type { Sha256 } from '../protocol/hash.js';
import type { NarInfo } from '../protocol/narinfo.js';
import { HashTap } from '../push/nar.js';

export class NarCheckError extends Error {
  override name = 'NarCheckError';
}

/**
 * Decompresses a NAR file as it streams past and hashes what comes out, so
 * NarHash and NarSize can be checked before the file is published. The
 * decompressors are the proxy's own (src/nar/decompress.ts).
 */
export class NarCheck {
  private readonly decompressor: Decompressor;
  private readonly tap = new HashTap();
  private readonly finished: Promise<void>;
  private failure: Error | undefined;

  constructor(compression: string) {
    const d = createDecompressor(compression);
    if (!d) throw new NarCheckError(`unknown compression ${compression}`);
    this.decompressor = d;
    const fail = (err: Error) => (this.failure ??= err instanceof DecompressError ? new NarCheckError(err.message) : err);
    this.tap.resume();
    this.tap.on('error', fail);
    d.input.on('error', fail);
    d.output.on('error', fail);
    d.output.pipe(this.tap);
    // The tap ends once the decompressor finished cleanly; a failed one never ends it, so its close settles this too.
    this.finished = new Promise<void>((resolve) => {
      this.tap.once('end', () => resolve());
      const settleOnFailure = () => this.failure && resolve();
      d.output.once('close', settleOnFailure);
      d.input.once('close', settleOnFailure);
    });
  }

  /** Feeds the next chunk of the file; waits while the decompressor is behind. */
  async write(chunk: Buffer): Promise<void> {
    if (this.failure) return;
    if (!this.decompressor.input.write(chunk)) await drainedOrGone(this.decompressor.input);
  }

  /** Ends the input and returns what the file unpacks to; throws if it does not unpack. */
  async result(): Promise<{ narHash: Sha256; narSize: number }> {
    if (!this.failure) this.decompressor.input.end();
    await this.finished;
    if (this.failure) throw this.failure;
    return { narHash: this.tap.digest, narSize: this.tap.bytes };
  }

  /** Stops decompressing (the download failed). */
  abort(): void {
    this.decompressor.destroy();
  }
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
