import { cacheFiles, isTemp, readNarInfos, safeNarRel, type NarInfoFile } from './cachefiles.js';
import { heldNar, type CacheFiles } from './files.js';
import { capSize } from './gc-size.js';
import { readRoots, type RootEntry } from './roots.js';

export interface GcOptions {
  /** Keep the newest `keep` roots of each name. */
  keep: number;
  /** Keep roots, and anything pushed (or found present by a push), younger than this. */
  keepDays: number;
  /** Never delete a file modified less than this long ago: protects running pushes. */
  graceMinutes: number;
  dryRun: boolean;
  /** Then delete the least recently served paths (not in a kept root's closure) until the cache holds at most this many bytes. */
  maxSize?: number;
  now?: number;
  log?: (line: string) => void;
}

export interface GcReport {
  rootsKept: string[];
  rootsExpired: string[];
  narinfosKept: number;
  narinfosDeleted: string[];
  narsDeleted: string[];
  tempsDeleted: string[];
  bytesFreed: number;
  /** Narinfos deleted to get under maxSize, oldest-served first. */
  evicted: string[];
  /** Bytes of narinfos and NARs left, when maxSize was given. */
  sizeAfter?: number;
  /** Leftovers of writers that died (a bucket's unfinished multipart uploads, stale push leases). */
  staleDeleted: string[];
}

const DAY = 86_400_000;

/** Hash part of a reference base name. */
const refHash = (ref: string) => ref.slice(0, 32);

/**
 * Deletes what no kept root needs, in an order that keeps the cache valid at
 * every instant: narinfos first (referrers before their references), then the
 * NARs that no narinfo on disk points to any more. Files younger than the
 * grace period are alive, so a push running at the same time keeps its work.
 */
export async function gc(cache: string | CacheFiles, opts: GcOptions): Promise<GcReport> {
  const files = cacheFiles(cache);
  const now = opts.now ?? Date.now();
  const grace = now - opts.graceMinutes * 60_000;
  const recent = Math.min(grace, now - opts.keepDays * DAY);
  const log = opts.log ?? (() => {});
  const report: GcReport = { rootsKept: [], rootsExpired: [], narinfosKept: 0, narinfosDeleted: [], narsDeleted: [], tempsDeleted: [], bytesFreed: 0, evicted: [], staleDeleted: [] };

  // In this order: the narinfos, then what running pushes hold, then the roots. A push records its root before it
  // lets go of its lease, so every narinfo listed is either held by a lease read next or in a root read after that.
  const narinfos = await readNarInfos(files);
  let inUse = await files.inUse(now);
  const roots = await readRoots(files);
  const kept: RootEntry[] = [];
  const expired: RootEntry[] = [];
  for (const entries of roots.values()) {
    entries.forEach((r, i) => (i < opts.keep || r.time.getTime() >= now - opts.keepDays * DAY ? kept : expired).push(r));
  }
  report.rootsKept = kept.map((r) => r.rel);
  report.rootsExpired = expired.map((r) => r.rel);

  // Seeds: kept roots' closures, recent narinfos, narinfos we cannot read (we cannot know what they need), and what running pushes hold.
  const live = new Set<string>();
  const queue: string[] = [];
  const mark = (hash: string) => {
    if (!live.has(hash)) {
      live.add(hash);
      queue.push(hash);
    }
  };
  for (const r of kept) for (const p of r.storePaths) mark(p.slice('/nix/store/'.length, '/nix/store/'.length + 32));
  for (const n of narinfos.values()) if (n.mtimeMs >= recent || !n.info) mark(n.hash);
  const markClosures = () => {
    for (let i = 0; i < queue.length; i++) {
      for (const ref of narinfos.get(queue[i]!)?.info?.references ?? []) mark(refHash(ref));
    }
  };
  for (const h of inUse.hashes) mark(h);
  markClosures();

  // Dead narinfos, referrers before references (Kahn's algorithm on "is referenced by a dead one").
  const dead = [...narinfos.values()].filter((n) => !live.has(n.hash));
  const deadSet = new Set(dead.map((n) => n.hash));
  const referrers = new Map<string, number>();
  for (const n of dead) for (const r of n.info!.references) if (deadSet.has(refHash(r)) && refHash(r) !== n.hash) referrers.set(refHash(r), (referrers.get(refHash(r)) ?? 0) + 1);
  const order: NarInfoFile[] = [];
  const ready = dead.filter((n) => !referrers.get(n.hash));
  while (ready.length > 0) {
    const n = ready.pop()!;
    order.push(n);
    for (const r of n.info!.references) {
      const h = refHash(r);
      if (h === n.hash || !deadSet.has(h)) continue;
      const left = referrers.get(h)! - 1;
      referrers.set(h, left);
      if (left === 0) ready.push(narinfos.get(h)!);
    }
  }

  for (const n of order) {
    if (!opts.dryRun) {
      // A push may have found it present (a directory: touched it) or started holding it (a bucket: a lease) since we listed: then it is alive.
      inUse = await files.inUse(now);
      if ([...inUse.hashes].some((h) => !live.has(h))) {
        for (const h of inUse.hashes) mark(h);
        markClosures();
      }
      if (live.has(n.hash)) continue;
      const st = await files.stat(n.file);
      if (!st || st.mtimeMs >= grace) continue;
      await files.remove(n.file);
    }
    report.narinfosDeleted.push(n.file);
    report.bytesFreed += n.size;
  }
  log(`${opts.dryRun ? 'would delete' : 'deleted'} ${report.narinfosDeleted.length} narinfos`);

  // NARs still referenced by a narinfo that exists now (re-read: a push may have published some meanwhile).
  const referenced = new Set<string>();
  const remaining = opts.dryRun ? new Map([...narinfos].filter(([h]) => !deadSet.has(h))) : await readNarInfos(files);
  for (const n of remaining.values()) {
    const rel = safeNarRel(n.url);
    if (rel) referenced.add(rel);
  }
  report.narinfosKept = remaining.size;
  for (const f of await files.list('nar')) {
    const temp = isTemp(f.rel);
    if (referenced.has(f.rel) || f.mtimeMs >= grace || heldNar(inUse, f)) continue;
    if (!opts.dryRun) {
      inUse = await files.inUse(now);
      const st = await files.stat(f.rel);
      if (!st || st.mtimeMs >= grace || heldNar(inUse, st)) continue;
      await files.remove(f.rel);
    }
    (temp ? report.tempsDeleted : report.narsDeleted).push(f.rel);
    report.bytesFreed += f.size;
  }
  // Stale temporaries elsewhere: narinfos and root listings of pushes that died.
  const others = [...(await files.list('')), ...(await Promise.all([...roots.keys()].map((n) => files.list(`roots/${n}`)))).flat()];
  for (const f of others) {
    if (!isTemp(f.rel) || f.mtimeMs >= grace) continue;
    if (!opts.dryRun) await files.remove(f.rel);
    report.tempsDeleted.push(f.rel);
    report.bytesFreed += f.size;
  }
  for (const r of expired) {
    if (!opts.dryRun) await files.remove(r.rel);
  }
  report.staleDeleted = await files.removeStale(grace, opts.dryRun);
  if (opts.maxSize !== undefined) {
    const capped = await capSize(files, kept, opts.maxSize, grace, opts.dryRun, log);
    report.evicted = capped.evicted;
    report.narsDeleted.push(...capped.narsDeleted);
    report.bytesFreed += capped.bytesFreed;
    report.sizeAfter = capped.sizeAfter;
  }
  return report;
}
