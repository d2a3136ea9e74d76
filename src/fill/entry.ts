import type { NarInfo } from '../protocol/narinfo.js';
import type { Origin } from '../origins/origin.js';
import type { Sha256 } from '../protocol/hash.js';

/** A path fill found upstream: the narinfo as this cache serves and stores it, and where its NAR comes from. */
export interface FillEntry {
  storeHash: string;
  /** Upstream's signed narinfo with the URL rewritten to push's layout (`nar/<FileHash>.nar.<ext>`). */
  info: NarInfo & { fileHash: Sha256 };
  /** The narinfo text served and, once the NAR is in place, written. */
  text: string;
  origin: Origin;
  /** The NAR's URL at the origin, as its narinfo gave it. */
  upstreamUrl: string;
}
