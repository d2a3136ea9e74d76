import { createHash, type Hash } from 'node:crypto';
import { sha256FromBytes, type Sha256 } from '../protocol/hash.js';

/** Every NAR starts with these bytes: the length-prefixed string "nix-archive-1". */
export const NAR_MAGIC = Buffer.concat([Buffer.from([13, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('nix-archive-1')]);

export type VerifyFailure = 'not-a-nar' | 'too-long' | 'too-short' | 'hash-mismatch' | 'prefix-mismatch';

/** One origin's bytes are not the NAR its signed narinfo describes (or not the bytes already sent). */
export class NarMismatch extends Error {
  override name = 'NarMismatch';
  constructor(
    readonly kind: VerifyFailure,
    message: string,
  ) {
    super(message);
  }
}

/** What the bytes already released to the client hash to: a later origin's bytes must agree. */
export interface Released {
  length: number;
  /** sha256 state over bytes [0, length), as a digest; undefined when length is 0. */
  digest: Buffer | undefined;
}

/**
 * Follows one origin's decompressed NAR from byte 0. Bytes are hashed when
 * they are released, and the last chunk seen is held back, so nothing past
 * what is verified leaves: `finish()` releases the final bytes only when
 * NarSize and NarHash match. The first bytes must be the NAR magic (an HTML
 * page or an undecompressed file never gets out). When an earlier origin
 * already released `released.length` bytes, this origin's bytes up to there
 * are replayed (hashed, not released) and must hash the same.
 */
export class NarCursor {
  private hash: Hash = createHash('sha256');
  private read = 0;
  private held: Buffer | undefined;

  constructor(
    private readonly narHash: Sha256,
    private readonly narSize: number,
    private readonly released: Released,
  ) {}

  /** Bytes of this NAR released so far (the absolute offset of the next byte to release). */
  get releasedLength(): number {
    return this.read - (this.held?.length ?? 0);
  }

  /** Feeds the next chunk; returns what may now be released (at `releasedLength` before the call), or nothing. */
  feed(chunk: Buffer): Buffer | undefined {
    this.checkMagic(chunk);
    if (this.read + chunk.length > this.narSize) {
      throw new NarMismatch('too-long', `more than NarSize (${this.narSize}) bytes`);
    }
    const replay = Math.min(chunk.length, Math.max(0, this.released.length - this.read));
    if (replay > 0) {
      this.hash.update(chunk.subarray(0, replay));
      this.read += replay;
      if (this.read === this.released.length) this.checkPrefix();
      chunk = chunk.subarray(replay);
      if (chunk.length === 0) return undefined;
    }
    const out = this.held;
    if (out) this.hash.update(out);
    this.held = chunk;
    this.read += chunk.length;
    return out;
  }

  /** The origin's stream ended: the held-back bytes, if the whole NAR verified. */
  finish(): Buffer {
    if (this.read !== this.narSize) throw new NarMismatch('too-short', `${this.read} bytes, NarSize says ${this.narSize}`);
    const last = this.held ?? Buffer.alloc(0);
    // The held bytes are hashed once, into a copy that becomes the state only if the whole NAR matches.
    const whole = this.hash.copy().update(last);
    const got = sha256FromBytes(whole.copy().digest());
    if (got !== this.narHash) throw new NarMismatch('hash-mismatch', `NAR hashes to ${got}, NarHash says ${this.narHash}`);
    this.hash = whole;
    this.held = undefined;
    return last;
  }

  /** What the released bytes hash to, for the next origin to check against. */
  releasedState(): Released {
    const length = this.releasedLength;
    if (length < this.released.length) return this.released; // this origin never got past the earlier one
    return { length, digest: length > 0 ? this.hash.copy().digest() : undefined };
  }

  private checkMagic(chunk: Buffer): void {
    if (this.read >= NAR_MAGIC.length) return;
    const n = Math.min(chunk.length, NAR_MAGIC.length - this.read);
    if (!chunk.subarray(0, n).equals(NAR_MAGIC.subarray(this.read, this.read + n))) {
      throw new NarMismatch('not-a-nar', `does not start like a NAR (first bytes ${JSON.stringify(chunk.subarray(0, 16).toString('latin1'))})`);
    }
  }

  private checkPrefix(): void {
    if (this.released.digest && !this.hash.copy().digest().equals(this.released.digest)) {
      throw new NarMismatch('prefix-mismatch', `the first ${this.released.length} bytes differ from those already sent`);
    }
  }
}
