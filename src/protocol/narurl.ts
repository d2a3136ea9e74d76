import { parseSha256, sha256Digits, type Sha256 } from './hash.js';
import { isStorePathHash } from './storepath.js';
import { NIX32_CHARS } from './nix32.js';

/**
 * The NAR URL the proxy hands out in the narinfos it serves. Nix caches a
 * narinfo for 30 days and the URL is not covered by signatures, so the URL
 * carries everything needed to serve or replace the NAR later, even after a
 * restart and with its origin gone:
 *
 *   nar/<store hash>/<nar hash>/<compression>/<origin id>/<origin's own URL>
 *
 * The origin's URL is kept readable when it is a plain relative path, and
 * base64url-encoded behind `~` otherwise.
 */
export interface NarRef {
  storeHash: string;
  narHash: Sha256;
  compression: string;
  originId: string;
  originUrl: string;
}

const SAFE_SEGMENT = /^[A-Za-z0-9._+-]+$/;
const COMPRESSION_RE = /^[a-z0-9]{1,16}$/;
const ORIGIN_ID_RE = /^[a-z0-9]{1,32}$/;

function isPlainRelative(url: string): boolean {
  return url.split('/').every((seg) => SAFE_SEGMENT.test(seg) && seg !== '.' && seg !== '..');
}

export function formatNarUrl(ref: NarRef): string {
  const tail = isPlainRelative(ref.originUrl)
    ? ref.originUrl
    : `~${Buffer.from(ref.originUrl).toString('base64url')}`;
  return `nar/${ref.storeHash}/${sha256Digits(ref.narHash)}/${ref.compression}/${ref.originId}/${tail}`;
}

/** Parses the path after `/nar/`; undefined for anything the proxy did not hand out. */
export function parseNarUrl(rest: string): NarRef | undefined {
  const parts = rest.split('/');
  if (parts.length < 5) return undefined;
  const [storeHash, narDigits, compression, originId, ...tailParts] = parts as [string, string, string, string, ...string[]];
  if (!isStorePathHash(storeHash)) return undefined;
  if (narDigits.length !== 52 || [...narDigits].some((c) => !NIX32_CHARS.includes(c))) return undefined;
  const narHash = parseSha256(`sha256:${narDigits}`);
  if (!narHash || !COMPRESSION_RE.test(compression) || !ORIGIN_ID_RE.test(originId)) return undefined;
  const tail = tailParts.join('/');
  let originUrl: string;
  if (tail.startsWith('~')) {
    if (tailParts.length !== 1 || !/^~[A-Za-z0-9_-]+$/.test(tail)) return undefined;
    originUrl = Buffer.from(tail.slice(1), 'base64url').toString();
    if (originUrl.length === 0) return undefined;
  } else {
    if (!isPlainRelative(tail)) return undefined;
    originUrl = tail;
  }
  return { storeHash, narHash, compression, originId, originUrl };
}

/**
 * Whether a NAR compressed with `actual` can be sent where Nix expects
 * `expected`. Nix 2.x picks its decompressor by sniffing the bytes for every
 * method except `none` and `br`, so xz, zstd, bzip2 and gzip stand in for each
 * other; uncompressed and brotli bytes only stand for themselves.
 */
export function compressionCompatible(expected: string, actual: string): boolean {
  if (expected === actual) return true;
  const exact = new Set(['none', '', 'br']);
  return !exact.has(expected) && !exact.has(actual);
}
