import { spawn } from 'node:child_process';
import { realpath } from 'node:fs/promises';
import { ConfigError } from '../errors.js';
import { parseSha256, type Sha256 } from '../protocol/hash.js';
import { parseStorePath, STORE_DIR } from '../protocol/storepath.js';

/** What the local store knows about one path, in narinfo terms (references as base names). */
export interface LocalPathInfo {
  storePath: string;
  hash: string;
  narHash: Sha256;
  narSize: number;
  references: string[];
  deriver?: string;
  ca?: string;
  sigs: string[];
}

export const NIX_ARGS = ['--extra-experimental-features', 'nix-command'];

/**
 * Turns command-line arguments (store paths, paths inside store paths, or
 * out-links such as `./result`) into top-level store paths.
 */
export async function resolveStorePaths(args: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const arg of args) {
    let real: string;
    try {
      real = await realpath(arg);
    } catch {
      // A store path that is not in this store: say so plainly rather than "ENOENT".
      throw new ConfigError(`${arg}: no such file or store path on this machine`);
    }
    const rest = real.startsWith(`${STORE_DIR}/`) ? real.slice(STORE_DIR.length + 1).split('/')[0]! : '';
    const storePath = `${STORE_DIR}/${rest}`;
    if (!rest || !parseStorePath(storePath)) throw new ConfigError(`${arg}: resolves to ${real}, which is not in ${STORE_DIR}`);
    if (!out.includes(storePath)) out.push(storePath);
  }
  return out;
}

function runCapture(cmd: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out).toString(), stderr }));
  });
}

interface PathInfoJson {
  path: string;
  valid?: boolean;
  narHash?: string;
  narSize?: number;
  references?: string[];
  deriver?: string;
  ca?: string;
  signatures?: string[];
}

function baseName(path: string): string {
  return path.slice(STORE_DIR.length + 1);
}

/** Parses `nix path-info --json` output. Exported for unit tests. */
export function parsePathInfoJson(text: string): LocalPathInfo[] {
  const list = JSON.parse(text) as PathInfoJson[];
  if (!Array.isArray(list)) throw new Error('nix path-info --json did not return a list');
  return list.map((p) => {
    const sp = parseStorePath(p.path);
    if (!sp) throw new Error(`nix path-info returned a bad path ${JSON.stringify(p.path)}`);
    if (p.valid === false) throw new ConfigError(`${p.path} is not valid in the local store`);
    const narHash = p.narHash ? parseSha256(p.narHash) : undefined;
    if (!narHash || typeof p.narSize !== 'number') throw new Error(`nix path-info gave no NarHash/NarSize for ${p.path}`);
    const info: LocalPathInfo = {
      storePath: p.path,
      hash: sp.hash,
      narHash,
      narSize: p.narSize,
      references: (p.references ?? []).map(baseName).sort(),
      sigs: p.signatures ?? [],
    };
    if (p.deriver) info.deriver = baseName(p.deriver);
    if (p.ca) info.ca = p.ca;
    return info;
  });
}

/** The closures of `paths` in the local store, references before referrers. */
export async function queryClosure(paths: string[]): Promise<LocalPathInfo[]> {
  if (paths.length === 0) return [];
  const res = await runCapture('nix', [...NIX_ARGS, 'path-info', '--json', '--recursive', ...paths]);
  if (res.code !== 0) {
    const msg = res.stderr.trim().split('\n').filter((l) => l.startsWith('error')).join('; ') || res.stderr.trim();
    throw new ConfigError(`nix path-info failed: ${msg}`);
  }
  return topoSort(parsePathInfoJson(res.stdout));
}

/** Orders infos so that each comes after all of its references (self-references ignored). */
export function topoSort(infos: LocalPathInfo[]): LocalPathInfo[] {
  const byBase = new Map(infos.map((i) => [baseName(i.storePath), i]));
  const done = new Set<string>();
  const out: LocalPathInfo[] = [];
  const visiting = new Set<string>();
  // Iterative DFS so deep closures cannot overflow the stack.
  for (const start of [...byBase.keys()].sort()) {
    const stack: Array<[string, number]> = [[start, 0]];
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      const [name, idx] = top;
      if (idx === 0) {
        if (done.has(name)) {
          stack.pop();
          continue;
        }
        visiting.add(name);
      }
      const refs = byBase.get(name)!.references.filter((r) => r !== name && byBase.has(r));
      if (idx < refs.length) {
        top[1] = idx + 1;
        const next = refs[idx]!;
        if (!done.has(next)) {
          if (visiting.has(next)) throw new Error(`reference cycle through ${next}`);
          stack.push([next, 0]);
        }
      } else {
        stack.pop();
        visiting.delete(name);
        done.add(name);
        out.push(byBase.get(name)!);
      }
    }
  }
  return out;
}
