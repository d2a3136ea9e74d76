import type { Readable } from 'node:stream';
import { errorMessage } from '../errors.js';
import { discard } from '../origins/body.js';
import { TooLarge, type CollectedBody } from '../origins/collect.js';
import type { Origin } from '../origins/origin.js';
import { createDecompressor, decodedWhole, decodeSmallXz, DecompressError } from './decompress.js';

/** Where one origin keeps a NAR: its narinfo's URL and Compression (unsigned fields: may be anything). */
export interface NarFile {
  url: string;
  compression: string;
  fileSize?: number | undefined;
  /** The NarSize, when known: bounds what a small file may decode to. */
  narSize?: number | undefined;
  /** Ask the origin although its circuit is open: no other origin could serve this NAR (nar/candidates.ts). */
  evenIfOpen?: boolean;
}

/**
 * Why an origin stopped serving a NAR, as a code:
 * - unavailable: it could not be asked (refused, timed out, 5xx, circuit
 *   open: the origin's breaker has counted it already);
 * - transport: the body broke off after the head (reset, stalled past the
 *   body-idle timeout, shorter than its Content-Length);
 * - content: the file is not what its narinfo says (cannot be decompressed,
 *   not a NAR, wrong size or hash): that origin's copy is quarantined;
 * - unsupported: a compression the proxy cannot read;
 * - absent: the origin answered that it has no such file;
 * - slow: stalled past the body-idle timeout, or under the slow rule
 *   (nar/rate-watch.ts): left for a faster origin, tried last for a while.
 */
export type SourceFailure = 'unavailable' | 'transport' | 'content' | 'unsupported' | 'absent' | 'slow';

export class SourceError extends Error {
  override name = 'SourceError';
  constructor(
    readonly failure: SourceFailure,
    message: string,
  ) {
    super(message);
  }
}

/** One origin's NAR, decompressed, from byte 0. */
export interface OpenedNar {
  /** Decompressed chunks; iteration throws a SourceError when the origin fails. */
  chunks: AsyncIterable<Buffer>;
  /** Bytes received from the origin so far (compressed), for the rate watch. */
  readonly inputBytes: number;
  /** Stops reading: destroys the HTTP body and kills the decompressor. Safe to call more than once. */
  close(): void;
  /** A filling LAN cache fetched this file from upstream for this request (`x-nix-lan-cache-fill: filled`), rather than having it already. */
  readonly filled?: boolean;
  /** Every byte is (or will be) in memory already, under a budget's reservation: a NAR fetched ahead (nar-prefetch.ts). */
  readonly inMemory?: boolean;
}

/** The header `nix-lan-cache fill` marks the NARs it streams from upstream with; nginx's hits carry none. */
export const FILL_HEADER = 'x-nix-lan-cache-fill';

export type OpenResult = { ok: true; nar: OpenedNar } | { ok: false; error: SourceError };

export async function openNar(origin: Origin, file: NarFile, signal: AbortSignal): Promise<OpenResult> {
  if (decodedWhole(file.compression, file.fileSize)) return openWhole(origin, file, file.fileSize, signal);
  const dec = createDecompressor(file.compression, file.fileSize, file.narSize);
  if (!dec) return { ok: false, error: new SourceError('unsupported', `compression ${JSON.stringify(file.compression.slice(0, 40))} is not one the proxy reads`) };
  const fetched = await origin.fetchFile(file.url, { signal, ...(file.evenIfOpen ? { evenIfOpen: true } : {}) });
  if (fetched.status !== 'present') {
    dec.destroy();
    return { ok: false, error: notServed(fetched) };
  }
  if (fetched.statusCode !== 200) {
    discard(fetched.body);
    dec.destroy();
    return { ok: false, error: new SourceError('unavailable', `HTTP ${fetched.statusCode} where 200 was expected`) };
  }
  return { ok: true, nar: new Piped(fetched.body, dec, fetched.headers[FILL_HEADER] === 'filled', origin) };
}

function notServed(fetched: { status: 'absent'; statusCode: number } | { status: 'unknown'; reason: string }): SourceError {
  return fetched.status === 'absent' ? new SourceError('absent', `HTTP ${fetched.statusCode}`) : new SourceError('unavailable', fetched.reason);
}

/** A small xz file, read whole (no more than its FileSize) and decoded in one go. */
async function openWhole(origin: Origin, file: NarFile, fileSize: number, signal: AbortSignal): Promise<OpenResult> {
  const fetched = await origin.fetchBody(file.url, { signal, limit: fileSize, ...(file.evenIfOpen ? { evenIfOpen: true } : {}) });
  if (fetched.status !== 'present') return { ok: false, error: notServed(fetched) };
  if (fetched.statusCode !== 200) {
    fetched.body.abort();
    return { ok: false, error: new SourceError('unavailable', `HTTP ${fetched.statusCode} where 200 was expected`) };
  }
  return { ok: true, nar: new Gathered(fetched.body, fileSize, file.narSize, fetched.headers[FILL_HEADER] === 'filled') };
}

/** Why an origin's body broke off: silence past the body-idle timeout is a stalled (slow) origin, anything else transport. */
function bodyFailure(err: unknown): SourceError {
  const stalled = (err as { code?: unknown } | null)?.code === 'UND_ERR_BODY_TIMEOUT';
  return new SourceError(stalled ? 'slow' : 'transport', errorMessage(err));
}

/**
 * A small xz file (most paths of a closure): the pieces undici hands over
 * are kept as they come (no stream: origins/collect.ts) and the whole file is
 * decoded in one go by the xz pool into one Buffer, the NAR.
 */
class Gathered implements OpenedNar {
  private readonly nar: Promise<Buffer>;
  private decoding: ReturnType<typeof decodeSmallXz> | undefined;
  private closed = false;

  constructor(
    private readonly body: CollectedBody,
    fileSize: number,
    narSize: number | undefined,
    readonly filled: boolean,
  ) {
    this.nar = body.whole.then(
      (pieces) => {
        if (this.closed) throw new SourceError('transport', 'closed');
        this.decoding = decodeSmallXz(pieces, fileSize, narSize);
        return this.decoding.result.catch((err: unknown) => {
          throw err instanceof DecompressError ? new SourceError('content', err.message) : new SourceError('transport', errorMessage(err));
        });
      },
      (err: unknown) => {
        // Larger than its narinfo's FileSize: not the file it describes.
        throw err instanceof TooLarge ? new SourceError('content', `xz file larger than its FileSize (${fileSize})`) : bodyFailure(err);
      },
    );
    this.nar.catch(() => {}); // the reader gets it; nobody may read (closed first)
  }

  get inputBytes(): number {
    return this.body.bytes;
  }

  get chunks(): AsyncIterable<Buffer> {
    return this.iterate();
  }

  private async *iterate(): AsyncGenerator<Buffer> {
    yield await this.nar;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.body.abort();
    this.decoding?.cancel();
  }
}

class Piped implements OpenedNar {
  inputBytes = 0;
  private transportError: string | undefined;
  private closed = false;

  constructor(
    private readonly body: Readable,
    private readonly dec: ReturnType<typeof createDecompressor> & object,
    readonly filled: boolean,
    origin: Origin,
  ) {
    body.on('data', (chunk: Buffer) => {
      this.inputBytes += chunk.length;
      origin.reportProgress?.();
    });
    body.on('error', (err) => {
      this.transportError ??= errorMessage(err);
      // Silence past the body-idle timeout: the origin is alive but not sending (a stalled Pi).
      dec.output.destroy(bodyFailure(err));
    });
    // A body that ends before its Content-Length is an undici error above; one that just ends, ends the input.
    body.pipe(dec.input);
  }

  get chunks(): AsyncIterable<Buffer> {
    return this.iterate();
  }

  private async *iterate(): AsyncGenerator<Buffer> {
    try {
      for await (const chunk of this.dec.output as AsyncIterable<Buffer>) yield chunk;
    } catch (err) {
      if (err instanceof SourceError) throw err;
      if (this.transportError !== undefined) throw new SourceError('transport', this.transportError);
      if (err instanceof DecompressError) throw new SourceError('content', err.message);
      throw new SourceError('transport', errorMessage(err));
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.body.unpipe(this.dec.input);
    discard(this.body);
    this.dec.destroy();
  }
}
