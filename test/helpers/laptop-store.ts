import { runOk } from './proc.js';
import { nixEnv, type CacheKey } from './nix.js';

/**
 * A laptop's own Nix store, as a chroot store (`--store DIR`, what
 * `serve --share-store DIR` shares): filled the ways a real laptop's is.
 */

/** Real Nix substitutes `paths` from the signed static cache in `cacheDir`: each path keeps the cache's signature, as from cache.nixos.org. */
export async function substituteInto(root: string, paths: string[], cacheDir: string, key: CacheKey): Promise<void> {
  await runOk('nix-store', ['--store', root, '-r', ...paths, '--option', 'substituters', `file://${cacheDir}`, '--option', 'trusted-public-keys', key.publicKey], { env: nixEnv(), timeoutMs: 300_000 });
}

/** `paths` (from this machine's store) copied in without any signature: paths the laptop built itself. */
export async function addUnsigned(root: string, paths: string[]): Promise<void> {
  await runOk('nix', ['copy', '--no-check-sigs', '--to', root, ...paths], { env: nixEnv(), timeoutMs: 300_000 });
}

/** Adds a signature by `key` to `paths` in the store. */
export async function signIn(root: string, paths: string[], key: CacheKey): Promise<void> {
  await runOk('nix', ['store', 'sign', '--store', root, '-k', key.secretFile, ...paths], { env: nixEnv() });
}
