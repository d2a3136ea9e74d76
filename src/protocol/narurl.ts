import { parseSha256, sha256Digits, type Sha256 } from './hash.js';
import { isStorePathHash } from './storepath.js';
import { NIX32_CHARS } from './nix32.js';

/**
 * The NAR URLs the proxy hands out in the narinfos it serves. Nix caches a
 * narinfo for 30 days and the URL is not covered by signatures, so the URL
 * names the NAR by its content, not by where it came from:
 *
 *   nar/<store hash>-<NarHash nix32>.nar
 *
 * Any origin whose trusted narinfo for that store hash has that NarHash can
 * serve it (decompressed: the narinfo says `Compression: none`).
 *
 * Before this format the proxy handed out (and Nix may still hold, for up to
 * 30 days after an upgrade) legacy URLs naming the origin and its file:
 *
 *   nar/<store hash>/<NarHash nix32>/<compression>/<origin id>/<origin's own URL>
 *
 * with the origin's URL base64url-encoded behind `~` when it is not a plain
 * relative path. Those are still parsed and served (nar/legacy.ts).
 */
export interface ContentNarRef {
  kind: 'content';
  storeHash: string;
  narHash: Sha256;
}

export interface LegacyNarRef {
  kind: 'legacy';
  storeHash: string;
  narHash: Sha256;
  compression: string;
  originId: string;
  originUrl: string;
}

export type NarRef = ContentNarRef | LegacyNarRef;

const SAFE_SEGMENT = /^[A-Za-z0-9._+-]+$/;
const COMPRESSION_RE = /^[a-z0-9]{1,16}$/;
const ORIGIN_ID_RE = /^[a-z0-9]{1,32}$/;
const CONTENT_RE = new RegExp(`^([${NIX32_CHARS}]{32})-([${NIX32_CHARS}]{52})\\.nar$`);

function isPlainRelative(url: string): boolean {
  return url.split('/').every((seg) => SAFE_SEGMENT.test(seg) && seg !== '.' && seg !== '..');
}

/** The URL (relative to the proxy's root) of the NAR with this NarHash of this store path. */
export function formatNarUrl(storeHash: string, narHash: Sha256): string {
  return `nar/${storeHash}-${sha256Digits(narHash)}.nar`;
}

/** The legacy form, kept to test that URLs handed out before the upgrade still work. */
export function formatLegacyNarUrl(ref: Omit<LegacyNarRef, 'kind'>): string {
  const tail = isPlainRelative(ref.originUrl) ? ref.originUrl : `~${Buffer.from(ref.originUrl).toString('base64url')}`;
  return `nar/${ref.storeHash}/${sha256Digits(ref.narHash)}/${ref.compression}/${ref.originId}/${tail}`;
}

/** Parses the path after `/nar/`; undefined for anything the proxy did not hand out. */
export function parseNarUrl(rest: string): NarRef | undefined {
  const content = CONTENT_RE.exec(rest);
  if (content) {
    const narHash = parseSha256(`sha256:${content[2]}`);
    return narHash && isStorePathHash(content[1]!) ? { kind: 'content', storeHash: content[1]!, narHash } : undefined;
  }
  return parseLegacy(rest);
}

function parseLegacy(rest: string): LegacyNarRef | undefined {
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
  return { kind: 'legacy', storeHash, narHash, compression, originId, originUrl };
}
