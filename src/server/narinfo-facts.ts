import type { NarFacts } from '../nar/candidates.js';
import type { Sha256 } from '../protocol/hash.js';
import type { NarInfo } from '../protocol/narinfo.js';

/**
 * A copy of a string: the fields of a parsed narinfo are slices of the
 * origin's whole text, and keeping one in the cache would keep all of that
 * text alive beside the text served (V8 slices strings, measured: ~1 KB per
 * cached path).
 */
const own = (s: string): string => Buffer.from(s).toString();

/** What the resolver keeps of a narinfo it serves: the NAR's facts and the references' store hashes (not its own), as strings of their own. */
export function keptFacts(info: NarInfo, storeHash: string): { facts: NarFacts; refs: string[] } {
  const { compression, narSize, fileSize } = info;
  const refs = info.references.map((r) => own(r.slice(0, 32))).filter((h) => h !== storeHash);
  const facts = { url: own(info.url), compression, narHash: own(info.narHash) as Sha256, narSize, fileHash: info.fileHash && (own(info.fileHash) as Sha256), fileSize };
  return { facts, refs };
}
