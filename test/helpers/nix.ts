import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HOST_NIX, type NixClient } from './nix-clients.js';
import { run, runOk, type RunResult } from './proc.js';

/** Real Nix as root with no daemon and no sandbox (see shared/reference/nix-facts.md). */
export const NIX_CONFIG = ['experimental-features = nix-command', 'sandbox = false', 'build-users-group =', 'substituters ='].join('\n');

export function nixEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, NIX_CONFIG, ...extra };
}

export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `nlc-${prefix}-`));
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

export interface Leaf {
  name: string;
  /** Bytes of incompressible content. */
  size: number;
}

export interface Closure {
  root: string;
  /** Every path of the closure, root included. */
  paths: string[];
}

/**
 * Builds a closure with real Nix: leaves of random bytes and a root that
 * references them all. `salt` makes the store paths unique to a test.
 */
export async function buildClosure(salt: string, leaves: Leaf[]): Promise<Closure> {
  const closure = await buildClosureOnce(salt, leaves);
  built.push(closure.root);
  return closure;
}

/** A closure built some other way (test/helpers/closure.ts): removed from /nix/store after the test file, like buildClosure's. */
export function removeAfterFile(root: string): void {
  built.push(root);
}

/** Roots of the closures this test file built; `deleteBuiltClosures` removes them from /nix/store after the file. */
const built: string[] = [];

/**
 * Deletes from the real /nix/store every closure this test file built, with
 * the derivations that built them, so runs don't pile up test paths. Paths
 * something else still uses (another file's closures never are: salts differ)
 * are left, as `nix-store --delete` refuses live paths. A root already gone
 * (another run on this machine built and deleted the same path) is skipped.
 */
export async function deleteBuiltClosures(): Promise<void> {
  if (built.length === 0) return;
  const invalid = new Set((await runOk('nix-store', ['--check-validity', '--print-invalid', ...built], { env: nixEnv() })).trim().split('\n'));
  const roots = built.splice(0).filter((r) => !invalid.has(r));
  if (roots.length === 0) return;
  const outputs = (await runOk('nix-store', ['-qR', ...roots], { env: nixEnv() })).trim().split('\n');
  const drvs = (await runOk('nix-store', ['-qd', ...outputs], { env: nixEnv() })).trim().split('\n').filter((d) => d.endsWith('.drv'));
  await runOk('nix-store', ['--delete', ...outputs], { env: nixEnv(), timeoutMs: 60_000 });
  if (drvs.length) await runOk('nix-store', ['--delete', ...drvs], { env: nixEnv(), timeoutMs: 60_000 });
}

/**
 * Builds one path whose builder runs `script` with /bin/sh (tools by
 * absolute path: the builder has no PATH); removed after the file like
 * buildClosure's.
 */
export async function buildPath(salt: string, name: string, script: string): Promise<string> {
  const path = (await runOk('nix-build', ['--no-out-link', '-E', drvExpr(salt, name, script)], { env: nixEnv(), timeoutMs: 300_000 })).trim();
  built.push(path);
  return path;
}

function drvExpr(salt: string, name: string, script: string): string {
  return `derivation { name = ${JSON.stringify(name)}; system = builtins.currentSystem; builder = "/bin/sh"; salt = ${JSON.stringify(salt)}; args = [ "-c" ${JSON.stringify(script)} ]; }`;
}

async function buildClosureOnce(salt: string, leaves: Leaf[]): Promise<Closure> {
  const drv = (name: string, script: string) => drvExpr(salt, name, script);
  const leafExprs = leaves.map((l) => drv(l.name, `/usr/bin/head -c ${l.size} /dev/urandom > $out`));
  const expr = `let leaves = [ ${leafExprs.map((e) => `(${e})`).join(' ')} ]; in ${drv(
    `${salt}-root`,
    `echo ${leaves.map((_, i) => `\${builtins.elemAt leaves ${i}}`).join(' ')} > $out`,
  )}`;
  const root = (await runOk('nix-build', ['--no-out-link', '-E', expr], { env: nixEnv(), timeoutMs: 300_000 })).trim();
  const paths = (await runOk('nix-store', ['-qR', root], { env: nixEnv() })).trim().split('\n');
  if (paths.length !== leaves.length + 1) throw new Error(`closure of ${root} has ${paths.length} paths, expected ${leaves.length + 1}`);
  return { root, paths };
}

export interface CacheKey {
  name: string;
  secretFile: string;
  publicKey: string;
}

export async function generateKey(dir: string, name: string): Promise<CacheKey> {
  const secretFile = join(dir, `${name}.sk`);
  const publicFile = join(dir, `${name}.pk`);
  await runOk('nix-store', ['--generate-binary-cache-key', name, secretFile, publicFile], { env: nixEnv() });
  return { name, secretFile, publicKey: (await readFile(publicFile, 'utf8')).trim() };
}

/** A static binary cache made by real Nix (`nix copy --to file://`), signed by `key`. */
export async function makeStaticCache(dir: string, paths: string[], key: CacheKey, compression: 'xz' | 'zstd' | 'none' = 'xz'): Promise<void> {
  await runOk('nix', ['copy', '--to', `file://${dir}?compression=${compression}`, ...paths], { env: nixEnv(), timeoutMs: 300_000 });
  await runOk('nix', ['store', 'sign', '--store', `file://${dir}`, '-r', '-k', key.secretFile, ...paths], { env: nixEnv() });
}

export interface SubstituteOptions {
  /** Nix's narinfo disk cache lives here; reuse it to simulate a laptop that looked paths up before. */
  xdgCache: string;
  trustedKeys: string[];
  timeoutMs?: number;
  extraOptions?: string[];
  /** Command prefix to run nix-store with, e.g. ['ip', 'netns', 'exec', 'NS']. */
  wrapper?: string[];
  /** Which real Nix substitutes (test/helpers/nix-clients.ts); default this machine's (2.8). */
  client?: NixClient;
  /** Directories outside the temp dir that a chroot client must see (the store and cache are usually under it). */
  binds?: string[];
}

/** Real Nix substitutes `paths` into a fresh chroot store, as a client machine would. */
export async function substitute(clientStore: string, paths: string[], substituters: string, opts: SubstituteOptions): Promise<RunResult> {
  const command = [
    ...(opts.wrapper ?? []),
    ...(opts.client ?? HOST_NIX).wrap(
      [
        'nix-store',
        '--store', clientStore,
        '-r', ...paths,
        '--option', 'substituters', substituters,
        '--option', 'trusted-public-keys', opts.trustedKeys.join(' '),
        ...(opts.extraOptions ?? []),
      ],
      opts.binds,
    ),
  ];
  return run(command[0]!, command.slice(1), { env: nixEnv({ XDG_CACHE_HOME: opts.xdgCache }), timeoutMs: opts.timeoutMs ?? 120_000 });
}
