import { errorMessage } from '../errors.js';
import { sha256Digits } from '../protocol/hash.js';
import { serialiseNarInfo, type NarInfo } from '../protocol/narinfo.js';
import { signNarInfo, type SecretKey } from '../protocol/signing.js';
import { parseStorePath } from '../protocol/storepath.js';
import { queryClosure, resolveStorePaths, type LocalPathInfo } from './closure.js';
import { Semaphore } from './limit.js';
import { COMPRESSIONS, dumpCompressed, type Compression } from './nar.js';
import { formatBytes } from '../format.js';
import type { Progress } from './progress.js';
import { checkRootName, formatRootListing, rootFileName } from './roots.js';
import type { CacheTarget } from './target.js';

export interface PushOptions {
  target: CacheTarget;
  /** Store paths, paths inside the store or out-links. */
  paths: string[];
  key?: SecretKey;
  compression: Compression;
  rootName?: string;
  dryRun: boolean;
  /** Compressions/uploads at a time. */
  jobs: number;
  progress: Progress;
}

export interface PushResult {
  closureSize: number;
  alreadyThere: number;
  pushed: string[];
  narBytes: number;
  fileBytes: number;
  rootFile?: string;
}

export class PushError extends Error {
  override name = 'PushError';
}

interface Uploaded {
  url: string;
  fileHash: NarInfo['fileHash'];
  fileSize: number;
}

async function uploadNar(info: LocalPathInfo, opts: PushOptions): Promise<Uploaded> {
  const { target, compression, progress } = opts;
  const nar = dumpCompressed(info.storePath, compression, (n) => progress.addBytes(n));
  const up = target.uploadTemp('nar', nar.output);
  up.catch(() => nar.abort());
  const [u, d] = await Promise.allSettled([up, nar.done]);
  if (u.status === 'rejected' || d.status === 'rejected') {
    nar.abort();
    if (u.status === 'fulfilled') await target.discard(u.value);
    throw u.status === 'rejected' ? u.reason : (d as PromiseRejectedResult).reason;
  }
  const got = d.value;
  if (got.narHash !== info.narHash || got.narSize !== info.narSize) {
    await target.discard(u.value);
    throw new PushError(
      `${info.storePath}: the NAR read from the store (${got.narHash}, ${got.narSize} bytes) does not match the store's NarHash (${info.narHash}, ${info.narSize} bytes); run nix-store --verify --check-contents`,
    );
  }
  const digits = sha256Digits(got.fileHash);
  const ext = COMPRESSIONS[compression].ext;
  const url = target.narName ? target.narName(digits, ext) : `nar/${digits}.nar.${ext}`;
  await target.commit(u.value, url);
  return { url, fileHash: got.fileHash, fileSize: got.fileSize };
}

export function makeNarInfo(info: LocalPathInfo, up: Uploaded, compression: Compression, key?: SecretKey): NarInfo {
  let ni: NarInfo = {
    storePath: info.storePath,
    path: parseStorePath(info.storePath)!,
    url: up.url,
    compression,
    fileHash: up.fileHash!,
    fileSize: up.fileSize,
    narHash: info.narHash,
    narSize: info.narSize,
    references: info.references,
    sigs: [...info.sigs],
    extra: [],
  };
  if (info.deriver) ni.deriver = info.deriver;
  if (info.ca) ni.ca = info.ca;
  if (key) ni = signNarInfo(ni, key);
  return ni;
}

/**
 * Pushes the closures of `paths`. NARs are uploaded in parallel (at most
 * `jobs` at once); a path's narinfo is published only after its NAR is in
 * place and after the narinfos of all its references, so a visible narinfo
 * always has its whole closure in the cache.
 */
export async function push(opts: PushOptions): Promise<PushResult> {
  const { target, progress } = opts;
  if (opts.rootName !== undefined) checkRootName(opts.rootName);
  const roots = await resolveStorePaths(opts.paths);
  const closure = await queryClosure(roots);
  await target.open(opts.dryRun);
  const existing = await target.existingNarInfos(closure.map((i) => i.hash), !opts.dryRun);
  const missing = closure.filter((i) => !existing.has(i.hash));
  const result: PushResult = { closureSize: closure.length, alreadyThere: closure.length - missing.length, pushed: [], narBytes: 0, fileBytes: 0 };
  const totalNar = missing.reduce((s, i) => s + i.narSize, 0);
  progress.log(
    `${closure.length} paths in the closure, ${result.alreadyThere} already in ${target.description}, ${missing.length} to send (${formatBytes(totalNar)} uncompressed)`,
  );
  if (opts.dryRun) {
    for (const i of missing) progress.log(`would push ${i.storePath} (${formatBytes(i.narSize)})`);
    if (opts.rootName) progress.log(`would record root ${opts.rootName}`);
    return result;
  }

  progress.start(missing.length, totalNar);
  const sem = new Semaphore(Math.max(1, opts.jobs));
  const published = new Map<string, Promise<void>>();
  const missingByBase = new Map(missing.map((i) => [i.storePath.slice('/nix/store/'.length), i]));
  let firstError: unknown;
  // `missing` is in dependency order, so every reference's promise exists before its referrer's.
  for (const info of missing) {
    const base = info.storePath.slice('/nix/store/'.length);
    const refs = info.references.filter((r) => r !== base && missingByBase.has(r)).map((r) => published.get(r)!);
    const task = (async () => {
      const up = await sem.use(async () => {
        if (firstError) throw new PushError('skipped after an earlier error');
        return uploadNar(info, opts);
      });
      try {
        await Promise.all(refs);
      } catch {
        throw new PushError(`${info.storePath}: not published because a reference failed`);
      }
      const ni = makeNarInfo(info, up, opts.compression, opts.key);
      await target.publishNarInfo(info.hash, serialiseNarInfo(ni), up.url);
      result.pushed.push(info.storePath);
      result.narBytes += info.narSize;
      result.fileBytes += up.fileSize;
      progress.pathDone(info.storePath, up.fileSize, info.narSize);
    })();
    task.catch((err: unknown) => {
      if (!firstError) firstError = new PushError(`${info.storePath}: ${errorMessage(err)}`);
    });
    published.set(base, task);
  }
  await Promise.allSettled(published.values());
  progress.finish();
  if (firstError) throw firstError;

  if (opts.rootName) {
    const rel = `roots/${opts.rootName}/${rootFileName(new Date())}`;
    await target.writeFile(rel, formatRootListing(closure.map((i) => i.storePath)));
    result.rootFile = rel;
  }
  return result;
}
