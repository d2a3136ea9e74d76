import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sha256FromBytes } from '../../src/protocol/hash.js';
import { parseNarInfo, type NarInfo } from '../../src/protocol/narinfo.js';
import { run, type RunResult } from './proc.js';

export const CLI = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

/** Runs the real CLI (`node dist/cli/main.js ...`) as a subprocess. */
export function cli(args: string[], options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<RunResult> {
  return run(process.execPath, [CLI, ...args], { env: options.env ?? process.env, timeoutMs: options.timeoutMs ?? 120_000 });
}

export interface CacheCheck {
  narinfos: Map<string, NarInfo>;
  problems: string[];
}

/**
 * Independent of the code under test (apart from the narinfo parser): every
 * narinfo's NAR exists with its FileSize and FileHash, and every reference
 * has a narinfo. A cache that passes serves complete closures.
 */
export async function checkCache(dir: string): Promise<CacheCheck> {
  const narinfos = new Map<string, NarInfo>();
  const problems: string[] = [];
  const names = await readdir(dir).catch(() => [] as string[]);
  for (const name of names.filter((n) => /^[0-9a-z]{32}\.narinfo$/.test(n))) {
    try {
      narinfos.set(name.slice(0, 32), parseNarInfo(await readFile(join(dir, name), 'utf8')));
    } catch (err) {
      problems.push(`${name}: ${String(err)}`);
    }
  }
  for (const [hash, info] of narinfos) {
    const narPath = join(dir, info.url);
    const st = await stat(narPath).catch(() => undefined);
    if (!st) {
      problems.push(`${hash}: NAR ${info.url} missing`);
      continue;
    }
    if (st.size !== info.fileSize) problems.push(`${hash}: NAR size ${st.size} != ${info.fileSize}`);
    const got = sha256FromBytes(createHash('sha256').update(await readFile(narPath)).digest());
    if (got !== info.fileHash) problems.push(`${hash}: NAR hash ${got} != ${info.fileHash}`);
    for (const ref of info.references) if (!narinfos.has(ref.slice(0, 32))) problems.push(`${hash}: reference ${ref} has no narinfo`);
  }
  if (narinfos.size > 0) {
    const nci = await readFile(join(dir, 'nix-cache-info'), 'utf8').catch(() => '');
    if (!nci.includes('StoreDir: /nix/store')) problems.push('nix-cache-info missing or wrong');
  }
  return { narinfos, problems };
}

/** name → mtimeMs/ino of every file under `dir/nar`, to prove nothing was (re)written. */
export async function narFiles(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const name of await readdir(join(dir, 'nar')).catch(() => [] as string[])) {
    const st = await stat(join(dir, 'nar', name));
    out.set(name, `${st.ino}:${st.mtimeMs}:${st.size}`);
  }
  return out;
}
