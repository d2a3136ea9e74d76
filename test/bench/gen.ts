import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { appendFile, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sha256FromBytes, type Sha256 } from '../../src/protocol/hash.js';
import { serialiseNarInfo, type NarInfo } from '../../src/protocol/narinfo.js';
import { parseStorePath } from '../../src/protocol/storepath.js';
import { NIX32_CHARS } from '../../src/protocol/nix32.js';
import { parseSecretKey, signNarInfo, type SecretKey } from '../../src/protocol/signing.js';
import { run } from '../helpers/proc.js';
import { buildLayeredClosure, type LayeredClosure, type LayeredShape } from '../helpers/closure.js';
import { generateKey, makeStaticCache, type CacheKey } from '../helpers/nix.js';

export async function loadSecretKey(file: string): Promise<SecretKey> {
  return parseSecretKey(await readFile(file, 'utf8'));
}

export function randomStoreHash(): string {
  const bytes = randomBytes(32);
  let s = '';
  for (let i = 0; i < 32; i++) s += NIX32_CHARS[bytes[i]! & 31];
  return s;
}

function narInfoFor(storeHash: string, name: string, narHash: Sha256, narSize: number, url: string, compression: string, refs: string[], key: SecretKey): NarInfo {
  const storePath = `/nix/store/${storeHash}-${name}`;
  const path = parseStorePath(storePath);
  if (!path) throw new Error(`bad store path ${storePath}`);
  const info: NarInfo = {
    storePath,
    path,
    url,
    compression,
    fileHash: narHash,
    fileSize: narSize,
    narHash,
    narSize,
    references: refs,
    sigs: [],
    extra: [],
  };
  return signNarInfo(info, key);
}

/**
 * `count` signed narinfos (each with two references, like a typical package)
 * written into `dir`, signed by `key` with the project's signing code. Returns
 * the store hashes. Their NARs don't exist: the load test only asks narinfos.
 */
export async function writeNarInfos(dir: string, count: number, key: SecretKey): Promise<string[]> {
  const hashes: string[] = [];
  for (let i = 0; i < count; i++) hashes.push(randomStoreHash());
  const batch = 500;
  for (let i = 0; i < count; i += batch) {
    await Promise.all(
      hashes.slice(i, i + batch).map((h, j) => {
        const n = i + j;
        const refs = [`${hashes[(n + 1) % count]}-dep-${(n + 1) % count}`, `${h}-bench-pkg-${n}`];
        const narHash = sha256FromBytes(randomBytes(32));
        const info = narInfoFor(h, `bench-pkg-${n}`, narHash, 100_000 + n, `nar/${narHash.slice(7)}.nar.xz`, 'xz', refs, key);
        return writeFile(join(dir, `${h}.narinfo`), serialiseNarInfo(info));
      }),
    );
  }
  return hashes;
}

/**
 * One big NAR (a single regular file of random bytes, as `nix-store --dump`
 * would write it) with a hand-made, signed narinfo (`Compression: none`).
 * The proxy checks that a NAR starts like one and hashes it; nothing unpacks
 * it. Returns the store hash and the NAR URL.
 */
export async function writeBigNar(dir: string, bytes: number, key: SecretKey): Promise<{ storeHash: string; narPath: string; size: number }> {
  await mkdir(join(dir, 'nar'), { recursive: true });
  const tmp = join(dir, 'nar', 'big.tmp');
  const mib = Math.ceil(bytes / (1 << 20));
  const str = (t: string) => {
    const b = Buffer.alloc(8 + Math.ceil(t.length / 8) * 8);
    b.writeBigUInt64LE(BigInt(t.length));
    b.write(t, 8);
    return b;
  };
  const trailer = str(')');
  const len = Buffer.alloc(8);
  const contents = mib * (1 << 20) - 96 - trailer.length; // the header below is 96 bytes; both are multiples of 8
  len.writeBigUInt64LE(BigInt(contents));
  await writeFile(tmp, Buffer.concat([...['nix-archive-1', '(', 'type', 'regular', 'contents'].map(str), len]));
  const res = await run('/bin/sh', ['-c', `head -c ${contents} /dev/urandom >> ${tmp}`], { timeoutMs: 120_000 });
  if (res.code !== 0) throw new Error(`writing ${tmp} failed: ${res.stderr}`);
  await appendFile(tmp, trailer);
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(tmp)) hash.update(chunk as Buffer);
  const narHash = sha256FromBytes(hash.digest());
  const url = `nar/${narHash.slice(7)}.nar`;
  await rename(tmp, join(dir, url));
  const storeHash = randomStoreHash();
  const size = mib * (1 << 20);
  await writeFile(join(dir, `${storeHash}.narinfo`), serialiseNarInfo(narInfoFor(storeHash, 'bench-big-nar', narHash, size, url, 'none', [], key)));
  return { storeHash, narPath: url, size };
}

/**
 * A layered closure built by real Nix (and, with `warm`, two more of its
 * shape: what a running proxy serves first), in an xz cache signed by the
 * Pi's key in `dir/pi-cache`, and an empty cache in `dir/empty-cache` (an
 * upstream that has nothing).
 */
export async function layeredCaches(dir: string, salt: string, shape: LayeredShape, warm: boolean): Promise<{ closure: LayeredClosure; warmups: LayeredClosure[]; key: CacheKey; cacheDir: string; emptyDir: string }> {
  const closure = await buildLayeredClosure(salt, shape);
  const warmups = warm ? [await buildLayeredClosure(`${salt}-warm-1`, shape), await buildLayeredClosure(`${salt}-warm-2`, shape)] : [];
  const key = await generateKey(dir, 'pi.lan-1');
  const cacheDir = join(dir, 'pi-cache');
  const emptyDir = join(dir, 'empty-cache');
  await mkdir(emptyDir, { recursive: true });
  await writeFile(join(emptyDir, 'nix-cache-info'), 'StoreDir: /nix/store\n');
  await makeStaticCache(cacheDir, [closure.root, ...warmups.map((w) => w.root)], key, 'xz');
  return { closure, warmups, key, cacheDir, emptyDir };
}
