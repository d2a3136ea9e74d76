import type { Logger } from 'pino';
import { serialiseNarInfo } from '../protocol/narinfo.js';
import type { Origin } from '../origins/origin.js';
import type { FillEntry } from './entry.js';
import { knownCompression, localNarInfo } from './layout.js';
import type { FillStats } from './stats.js';

export type UpstreamLookup =
  | { status: 'found'; entry: FillEntry }
  /** Every upstream answered: none has a narinfo fill may use (absent, untrusted, invalid, or one it cannot store). */
  | { status: 'missing' }
  /** None had it and at least one could not be asked (down, circuit open). */
  | { status: 'unavailable'; unknown: string[] };

/**
 * Asks the upstreams in order; the first narinfo validly signed by a trusted
 * key wins (HttpOrigin checks the signature and treats anything else as
 * absent). An upstream whose circuit is open is skipped at once, so with the
 * Pi's internet down a miss costs nothing.
 */
export async function lookupUpstreams(origins: readonly Origin[], storeHash: string, stats: FillStats, log: Logger, dotless = false): Promise<UpstreamLookup> {
  const unknown: string[] = [];
  for (const origin of origins) {
    if (origin.breaker.isOpen) {
      unknown.push(`${origin.name}: circuit open`);
      continue;
    }
    const found = await origin.lookupNarInfo(storeHash);
    if (found.status === 'unknown') {
      unknown.push(`${origin.name}: ${found.reason}`);
      continue;
    }
    if (found.status === 'absent') {
      if (found.reason === 'untrusted') stats.untrustedNarinfos++;
      continue;
    }
    const { info } = found;
    if (!info.fileHash || !knownCompression(info.compression)) {
      log.warn({ event: 'fill-unsupported', storePath: info.storePath, origin: origin.name, compression: info.compression, fileHash: info.fileHash ?? null }, 'upstream narinfo has no FileHash or an unknown compression; not filling it');
      continue;
    }
    const local = localNarInfo(info, dotless);
    return { status: 'found', entry: { storeHash, info: local, text: serialiseNarInfo(local), origin, upstreamUrl: info.url } };
  }
  return unknown.length ? { status: 'unavailable', unknown } : { status: 'missing' };
}
