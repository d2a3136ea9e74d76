import type { NarInfo } from '../protocol/narinfo.js';
import { formatNarUrl } from '../protocol/narurl.js';

/**
 * The narinfo Nix gets: the NAR uncompressed (the proxy decompresses whatever
 * the origin holds), named by its content, so any origin with the same
 * NarHash can serve it. Only unsigned fields change: signatures cover
 * `1;path;NarHash;NarSize;references`.
 */
export function servedNarInfo(info: NarInfo): NarInfo {
  return { ...info, url: formatNarUrl(info.path.hash, info.narHash), compression: 'none', fileHash: info.narHash, fileSize: info.narSize };
}
