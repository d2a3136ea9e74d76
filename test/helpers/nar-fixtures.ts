import { execFileSync } from 'node:child_process';
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import * as zlib from 'node:zlib';
import { sha256FromBytes, type Sha256 } from '../../src/protocol/hash.js';
import { serialiseNarInfo, type NarInfo } from '../../src/protocol/narinfo.js';
import { NIX32_CHARS } from '../../src/protocol/nix32.js';
import { parseSecretKey, signNarInfo, type SecretKey } from '../../src/protocol/signing.js';
import { parseStorePath } from '../../src/protocol/storepath.js';

/** A signing key made in memory (no Nix needed). */
export function memoryKey(name: string): SecretKey {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const seed = privateKey.export({ format: 'der', type: 'pkcs8' }).subarray(-32);
  const pub = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
  return parseSecretKey(`${name}:${Buffer.concat([seed, pub]).toString('base64')}`);
}

function narString(s: Buffer | string): Buffer {
  const b = Buffer.isBuffer(s) ? s : Buffer.from(s);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(b.length));
  return Buffer.concat([len, b, Buffer.alloc((8 - (b.length % 8)) % 8)]);
}

/** The NAR serialisation of a single regular file, as `nix-store --dump` writes it. */
export function narOfFile(contents: Buffer): Buffer {
  return Buffer.concat(['nix-archive-1', '(', 'type', 'regular', 'contents', contents, ')'].map(narString));
}

export function randomStoreHash(): string {
  return [...randomBytes(32)].map((b) => NIX32_CHARS[b & 31]).join('');
}

export interface NarFixture {
  storeHash: string;
  storePath: string;
  nar: Buffer;
  narHash: Sha256;
  narSize: number;
}

/** A store path whose NAR is one file of `size` bytes (half random, half compressible). */
export function narFixture(size: number, name = 'fixture'): NarFixture {
  const contents = Buffer.concat([randomBytes(Math.floor(size / 2)), Buffer.alloc(size - Math.floor(size / 2), 'nix')]);
  const nar = narOfFile(contents);
  const storeHash = randomStoreHash();
  return { storeHash, storePath: `/nix/store/${storeHash}-${name}`, nar, narHash: sha256FromBytes(createHash('sha256').update(nar).digest()), narSize: nar.length };
}

export type Compression = 'none' | 'xz' | 'zstd' | 'bzip2';

/** The NAR compressed as a cache would store it (xz and bzip2 by the real binaries). */
export function compress(nar: Buffer, compression: Compression): Buffer {
  switch (compression) {
    case 'none':
      return nar;
    case 'zstd':
      return (zlib as unknown as { zstdCompressSync(b: Buffer): Buffer }).zstdCompressSync(nar);
    case 'xz':
      return execFileSync('xz', ['-c', '-1'], { input: nar, maxBuffer: 1 << 30 });
    case 'bzip2':
      return execFileSync('bzip2', ['-c', '-1'], { input: nar, maxBuffer: 1 << 30 });
  }
}

const EXT: Record<Compression, string> = { none: '', xz: '.xz', zstd: '.zst', bzip2: '.bz2' };

/** A signed narinfo for the fixture as stored with `compression` (fields overridable, e.g. a rewritten Compression). */
export function narinfoFor(f: NarFixture, file: Buffer, compression: Compression, key: SecretKey, override: Partial<NarInfo> = {}): { text: string; url: string } {
  const fileHash = sha256FromBytes(createHash('sha256').update(file).digest());
  const url = `nar/${fileHash.slice(7)}.nar${EXT[compression]}`;
  const info: NarInfo = {
    storePath: f.storePath,
    path: parseStorePath(f.storePath)!,
    url,
    compression,
    fileHash,
    fileSize: file.length,
    narHash: f.narHash,
    narSize: f.narSize,
    references: [],
    sigs: [],
    extra: [],
  };
  const signed = signNarInfo(info, key);
  return { text: serialiseNarInfo({ ...signed, ...override }), url: override.url ?? url };
}
