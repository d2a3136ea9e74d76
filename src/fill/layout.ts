import { parseSha256, sha256Digits, type Sha256 } from '../protocol/hash.js';
import type { NarInfo } from '../protocol/narinfo.js';
import { NIX32_CHARS } from '../protocol/nix32.js';
import { COMPRESSIONS } from '../push/nar.js';

/** File name extension per compression, as push and `nix copy` name NAR files. */
const EXTENSIONS: Record<string, string> = { xz: COMPRESSIONS.xz.ext, zstd: COMPRESSIONS.zstd.ext, bzip2: 'bz2', none: '' };

export function knownCompression(compression: string): boolean {
  return compression in EXTENSIONS;
}

/**
 * Where a NAR lives in push's layout: `nar/<FileHash>.nar.<ext>` (the file
 * keeps upstream's compression and FileHash); in a bucket `nar/<FileHash>-<ext>`
 * (no '.': push/s3-target.ts).
 */
export function narRelFor(fileHash: Sha256, compression: string, dotless = false): string {
  const ext = EXTENSIONS[compression];
  if (ext === undefined) throw new Error(`no file name for compression ${compression}`);
  if (dotless) return `nar/${sha256Digits(fileHash)}${ext ? `-${ext}` : ''}`;
  return `nar/${sha256Digits(fileHash)}.nar${ext ? `.${ext}` : ''}`;
}

const NAR_NAME_RE = new RegExp(`^([${NIX32_CHARS}]{52})(?:\\.nar(?:\\.(xz|zst|bz2))?|-(xz|zst|bz2))?$`);

/** The FileHash a request for `nar/<name>` names, or undefined if it is not a NAR file name of this layout. */
export function parseNarName(name: string): { fileHash: Sha256; rel: string } | undefined {
  const m = NAR_NAME_RE.exec(name);
  const fileHash = m ? parseSha256(`sha256:${m[1]}`) : undefined;
  return fileHash ? { fileHash, rel: `nar/${name}` } : undefined;
}

/** The narinfo as fill serves and stores it: upstream's, with the URL pointing into this cache. */
export function localNarInfo(info: NarInfo, dotless = false): NarInfo & { fileHash: Sha256 } {
  return { ...info, fileHash: info.fileHash!, url: narRelFor(info.fileHash!, info.compression, dotless) };
}
