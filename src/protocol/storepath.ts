import { NIX32_CHARS } from './nix32.js';

export const STORE_DIR = '/nix/store';

const HASH_RE = new RegExp(`^[${NIX32_CHARS}]{32}$`);
// Nix's rule for the name part of a store path.
const NAME_RE = /^[A-Za-z0-9+\-._?=]+$/;

/** The 32-character nix32 hash part that names a store path. */
export function isStorePathHash(text: string): boolean {
  return HASH_RE.test(text);
}

export interface StorePath {
  hash: string;
  name: string;
  /** `<hash>-<name>`, as narinfo References list it. */
  baseName: string;
}

export function parseStorePathBaseName(baseName: string): StorePath | undefined {
  const hash = baseName.slice(0, 32);
  const name = baseName.slice(33);
  if (baseName[32] !== '-' || !isStorePathHash(hash)) return undefined;
  if (name.length === 0 || name.length > 211 || !NAME_RE.test(name) || name.startsWith('.')) return undefined;
  return { hash, name, baseName };
}

export function parseStorePath(path: string, storeDir = STORE_DIR): StorePath | undefined {
  const prefix = `${storeDir}/`;
  if (!path.startsWith(prefix)) return undefined;
  return parseStorePathBaseName(path.slice(prefix.length));
}
