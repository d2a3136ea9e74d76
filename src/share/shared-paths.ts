import { LRUCache } from 'lru-cache';
import { serialiseNarInfo, type NarInfo } from '../protocol/narinfo.js';
import { formatNarUrl } from '../protocol/narurl.js';
import { sigKeyName as keyName, type TrustedKeys } from '../protocol/signing.js';
import type { LocalStore, StorePathInfo } from '../store/local-store.js';

/** A path this machine shares: its database entry, the signatures that verified, the narinfo other machines get. */
export interface SharedPath {
  info: StorePathInfo;
  text: string;
}

/** Answers remembered: a shared path for a minute, anything else (absent, not shared) for a few seconds. */
const SHARED_TTL_MS = 60_000;
const NOT_SHARED_TTL_MS = 5_000;

/**
 * Decides what the share gives away: a path of the local store only if it
 * carries a signature that verifies against a key this machine trusts
 * (docs/sharing.md). A path built here, unsigned, or signed only by keys not
 * trusted is "not shared", which is the same answer as "not here": the
 * caller cannot tell them apart, by the answer or by the work done (a row
 * without a signature by a trusted key name is given up before its
 * references are read or any signature is checked).
 *
 * The narinfo carries only what a client needs and the signatures cover:
 * no Deriver (it names a local .drv), no registration time, no signatures
 * by other keys. `URL: nar/<hash>-<NarHash>.nar`, `Compression: none`.
 */
export class SharedPaths {
  private readonly cache = new LRUCache<string, { shared: SharedPath | undefined }>({ max: 8192, ttlAutopurge: false });

  constructor(
    private readonly store: LocalStore,
    private readonly trusted: TrustedKeys,
  ) {}

  /** The shared path with this store hash, if any. Throws a StoreError when the database cannot be read. */
  async find(storeHash: string): Promise<SharedPath | undefined> {
    const hit = this.cache.get(storeHash);
    if (hit) return hit.shared;
    const shared = await this.decide(storeHash);
    this.cache.set(storeHash, { shared }, { ttl: shared ? SHARED_TTL_MS : NOT_SHARED_TTL_MS });
    return shared;
  }

  private async decide(storeHash: string): Promise<SharedPath | undefined> {
    const row = this.store.lookup(storeHash);
    if (!row || !row.sigs.some((s) => this.trusted.has(keyName(s)))) return undefined;
    const info = row.info();
    if (!info) return undefined;
    const valid: string[] = [];
    for (const sig of info.sigs) {
      if (this.trusted.has(keyName(sig)) && (await this.trusted.verifyAsync(narInfoOf(info, [sig])))) valid.push(sig);
    }
    if (valid.length === 0) return undefined;
    return { info, text: serialiseNarInfo(narInfoOf(info, valid)) };
  }
}

function narInfoOf(info: StorePathInfo, sigs: string[]): NarInfo {
  return {
    storePath: info.storePath,
    path: info.path,
    url: formatNarUrl(info.path.hash, info.narHash),
    compression: 'none',
    fileHash: info.narHash,
    fileSize: info.narSize,
    narHash: info.narHash,
    narSize: info.narSize,
    references: info.references,
    ...(info.ca ? { ca: info.ca } : {}),
    sigs,
    extra: [],
  };
}
