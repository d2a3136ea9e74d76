import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ConfigError, errorMessage } from '../errors.js';
import type { NarInfo } from '../protocol/narinfo.js';
import type { TrustedKeys } from '../protocol/signing.js';
import { cacheFiles, isTemp, readNarInfos, safeNarRel } from './cachefiles.js';
import type { CacheFiles } from './files.js';
import { mapLimit } from './limit.js';
import { HashTap } from './nar.js';

export type ProblemKind =
  | 'unreadable-narinfo'
  | 'missing-nar'
  | 'wrong-size'
  | 'wrong-hash'
  | 'wrong-nar-hash'
  | 'bad-signature'
  | 'missing-reference';

export interface Problem {
  kind: ProblemKind;
  file: string;
  message: string;
}

export interface VerifyOptions {
  /** When given, every narinfo must carry a valid signature by one of these. */
  trustedKeys?: TrustedKeys;
  /** Also decompress each NAR and check NarHash and NarSize (slow). */
  deep: boolean;
  concurrency: number;
}

export interface VerifyReport {
  narinfos: number;
  nars: number;
  problems: Problem[];
  /** NAR files no narinfo points to (harmless; gc removes them). */
  orphans: string[];
  /** Temporary files of pushes in progress or interrupted. */
  temps: string[];
}

const DECOMPRESSORS: Record<string, string[] | null> = { xz: ['xz', '-dc'], zstd: ['zstd', '-dcq'], bzip2: ['bzip2', '-dc'], gzip: ['gzip', '-dc'], none: null };

interface Hashed {
  fileHash: string;
  fileSize: number;
  /** With `deep`: what the file unpacks to. */
  narHash?: string;
  narSize?: number;
}

/**
 * Reads a NAR file once: hashes it, and with `deep` also unpacks it (xz,
 * zstd, bzip2 or gzip, by the narinfo's Compression) and hashes the NAR, so
 * a NAR in a bucket is downloaded once, not twice.
 */
async function hashNar(source: Readable, compression: string, deep: boolean): Promise<Hashed> {
  const fileTap = new HashTap();
  const cmd = deep ? DECOMPRESSORS[compression] : null;
  if (deep && cmd === undefined) {
    source.destroy();
    throw new Error(`unknown compression ${compression}`);
  }
  if (!cmd) {
    fileTap.resume();
    await pipeline(source, fileTap);
    const file = { fileHash: fileTap.digest, fileSize: fileTap.bytes };
    return deep ? { ...file, narHash: file.fileHash, narSize: file.fileSize } : file;
  }
  const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  // A decompressor that cannot be started (not installed) is an error of this machine, not of the cache: stop with it.
  const started = new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  try {
    await started;
  } catch (err) {
    source.destroy();
    throw new ConfigError(`verify --deep cannot unpack ${compression} NARs: running \`${cmd[0]}\` failed (${errorMessage(err)}); install it or run without --deep`);
  }
  child.on('error', () => {}); // after the start, a failure shows as its exit status below
  child.stdin.on('error', () => {}); // EPIPE when the decompressor gives up: its exit status says why
  const feeding = pipeline(source, fileTap, child.stdin).catch(() => {});
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => child.on('close', r));
  const narTap = new HashTap();
  narTap.resume();
  await pipeline(child.stdout, narTap);
  const code = await exited;
  await feeding;
  if (code !== 0) throw new Error(`${cmd[0]} failed: ${err.trim()}`);
  return { fileHash: fileTap.digest, fileSize: fileTap.bytes, narHash: narTap.digest, narSize: narTap.bytes };
}

/** Checks a cache (a directory or a bucket); reports every problem found rather than stopping at the first. */
export async function verify(cache: string | CacheFiles, opts: VerifyOptions): Promise<VerifyReport> {
  const files = cacheFiles(cache);
  const narinfos = await readNarInfos(files, Math.max(opts.concurrency, 16));
  const problems: Problem[] = [];
  const referenced = new Set<string>();
  const add = (kind: ProblemKind, file: string, message: string) => problems.push({ kind, file, message });
  await mapLimit([...narinfos.values()], opts.concurrency, async (n) => {
    if (!n.info || n.error) {
      add('unreadable-narinfo', n.file, n.error ?? 'cannot parse');
      const rel = safeNarRel(n.url);
      if (rel) referenced.add(rel);
      return;
    }
    const info: NarInfo = n.info;
    const rel = safeNarRel(info.url);
    if (!rel) {
      add('unreadable-narinfo', n.file, `URL ${JSON.stringify(info.url)} points outside the cache`);
      return;
    }
    referenced.add(rel);
    const st = await files.stat(rel);
    if (!st) add('missing-nar', n.file, `${rel} does not exist`);
    else if (info.fileSize !== undefined && st.size !== info.fileSize) add('wrong-size', n.file, `${rel} has ${st.size} bytes, FileSize says ${info.fileSize}`);
    else if (info.fileHash || opts.deep) {
      try {
        const source = await files.read(rel);
        if (!source) add('missing-nar', n.file, `${rel} does not exist`);
        else {
          const got = await hashNar(source, info.compression, opts.deep);
          if (info.fileHash && got.fileHash !== info.fileHash) add('wrong-hash', n.file, `${rel} hashes to ${got.fileHash}, FileHash says ${info.fileHash}`);
          else if (info.fileSize !== undefined && got.fileSize !== info.fileSize) add('wrong-size', n.file, `${rel} has ${got.fileSize} bytes, FileSize says ${info.fileSize}`);
          if (opts.deep && (got.narHash !== info.narHash || got.narSize !== info.narSize))
            add('wrong-nar-hash', n.file, `${rel} unpacks to ${got.narHash} (${got.narSize} bytes), NarHash says ${info.narHash} (${info.narSize} bytes)`);
        }
      } catch (err) {
        if (err instanceof ConfigError) throw err;
        add(opts.deep ? 'wrong-nar-hash' : 'wrong-hash', n.file, `${rel}: ${errorMessage(err)}`);
      }
    }
    if (opts.trustedKeys && !opts.trustedKeys.verify(info)) {
      const names = info.sigs.map((s) => s.slice(0, s.indexOf(':')));
      const trusted = names.filter((k) => opts.trustedKeys!.has(k));
      add('bad-signature', n.file, trusted.length > 0 ? `signature by ${trusted.join(', ')} does not verify` : `no signature by a trusted key (signed by: ${names.join(', ') || 'nobody'})`);
    }
    for (const ref of info.references) {
      if (!narinfos.has(ref.slice(0, 32))) add('missing-reference', n.file, `reference ${ref} has no narinfo`);
    }
  });
  const orphans: string[] = [];
  const temps: string[] = [];
  const nars = await files.list('nar');
  for (const f of nars) {
    if (isTemp(f.rel)) temps.push(f.rel);
    else if (!referenced.has(f.rel)) orphans.push(f.rel);
  }
  for (const f of await files.list('')) if (isTemp(f.rel)) temps.push(f.rel);
  problems.sort((a, b) => a.file.localeCompare(b.file) || a.kind.localeCompare(b.kind));
  return { narinfos: narinfos.size, nars: nars.length - temps.filter((t) => t.startsWith('nar/')).length, problems, orphans: orphans.sort(), temps: temps.sort() };
}
