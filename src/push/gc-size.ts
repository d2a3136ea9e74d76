import { readNarInfos, safeNarRel, type NarInfoFile } from './cachefiles.js';
import type { CacheFiles } from './files.js';
import type { RootEntry } from './roots.js';

export interface SizeCapResult {
  /** Narinfos deleted to get under the cap, oldest-served first. */
  evicted: string[];
  narsDeleted: string[];
  bytesFreed: number;
  /** Bytes of narinfos and the NARs they point to, after eviction. */
  sizeAfter: number;
}

interface Candidate {
  n: NarInfoFile;
  narRel: string | undefined;
  bytes: number;
  /** When it was last served, as well as the filesystem can tell (see docs/fill.md). */
  servedMs: number;
  referrers: number;
}

/**
 * The last time a path was served: nginx serves hits without fill or gc
 * knowing, so this reads access times. With Linux's default `relatime` an
 * atime moves at most once a day, which is fine for ordering evictions by
 * days; on a `noatime` mount it is the time the path was published or last
 * touched by push/fill (mtime).
 */
function servedTime(narinfo: { atimeMs: number; mtimeMs: number }, nar: { atimeMs: number; mtimeMs: number } | undefined): number {
  return Math.max(narinfo.atimeMs, narinfo.mtimeMs, nar?.atimeMs ?? 0, nar?.mtimeMs ?? 0);
}

const refHash = (ref: string) => ref.slice(0, 32);

/**
 * Deletes the least recently served paths until the cache holds at most
 * `maxSize` bytes. Never deletes a path in a kept root's closure, nor a file
 * younger than `grace`; only deletes a path no remaining narinfo refers to,
 * so every closure in the cache stays complete.
 */
export async function capSize(files: CacheFiles, keptRoots: RootEntry[], maxSize: number, grace: number, dryRun: boolean, log: (line: string) => void): Promise<SizeCapResult> {
  const narinfos = await readNarInfos(files);
  const protectedHashes = new Set<string>();
  const queue: string[] = [];
  for (const r of keptRoots) for (const p of r.storePaths) queue.push(p.slice('/nix/store/'.length, '/nix/store/'.length + 32));
  const inUse = await files.inUse(Date.now());
  queue.push(...inUse.hashes);
  while (queue.length > 0) {
    const h = queue.pop()!;
    if (protectedHashes.has(h)) continue;
    protectedHashes.add(h);
    for (const ref of narinfos.get(h)?.info?.references ?? []) queue.push(refHash(ref));
  }

  const narUsers = new Map<string, number>();
  const cands = new Map<string, Candidate>();
  let total = 0;
  for (const n of narinfos.values()) {
    const narRel = safeNarRel(n.url);
    const st = await files.stat(n.file);
    const nst = narRel ? await files.stat(narRel) : undefined;
    if (!st) continue;
    if (narRel) narUsers.set(narRel, (narUsers.get(narRel) ?? 0) + 1);
    const bytes = st.size + (nst?.size ?? 0);
    total += bytes;
    cands.set(n.hash, { n, narRel, bytes, servedMs: servedTime(st, nst), referrers: 0 });
  }
  for (const c of cands.values()) for (const ref of c.n.info?.references ?? []) if (refHash(ref) !== c.n.hash) cands.get(refHash(ref)) && cands.get(refHash(ref))!.referrers++;

  const result: SizeCapResult = { evicted: [], narsDeleted: [], bytesFreed: 0, sizeAfter: total };
  const evictable = (c: Candidate) => c.referrers === 0 && c.n.info && !protectedHashes.has(c.n.hash) && c.n.mtimeMs < grace && !(c.narRel && inUse.nars.has(c.narRel));
  // Few thousand paths: a sorted scan per eviction round is plenty.
  for (let round = 0; total > maxSize && round < cands.size; round++) {
    let oldest: Candidate | undefined;
    for (const c of cands.values()) if (evictable(c) && (!oldest || c.servedMs < oldest.servedMs)) oldest = c;
    if (!oldest) break;
    cands.delete(oldest.n.hash);
    if (!dryRun) await files.remove(oldest.n.file);
    result.evicted.push(oldest.n.file);
    if (oldest.narRel) {
      const users = (narUsers.get(oldest.narRel) ?? 1) - 1;
      narUsers.set(oldest.narRel, users);
      if (users === 0) {
        if (!dryRun) await files.remove(oldest.narRel);
        result.narsDeleted.push(oldest.narRel);
      }
    }
    total -= oldest.bytes;
    result.bytesFreed += oldest.bytes;
    for (const ref of oldest.n.info!.references) {
      const c = cands.get(refHash(ref));
      if (c && c !== oldest) c.referrers--;
    }
  }
  result.sizeAfter = total;
  if (total > maxSize) log(`the cache still holds ${total} bytes, over --max-size ${maxSize}: the rest is needed by kept roots or younger than the grace period`);
  return result;
}
