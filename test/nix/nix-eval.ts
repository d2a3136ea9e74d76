import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { nixEnv } from '../helpers/nix.js';
import { run, type RunResult } from '../helpers/proc.js';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
/**
 * The vendored nixpkgs lib (never copied into the project): NIXPKGS_LIB, or
 * shared/vendor/nixpkgs-lib/lib beside the clone (CI: shared/ next to the
 * checkout) or beside a parent directory (a worktree under …/wt/NAME).
 */
function findNixpkgsLib(): string {
  if (process.env.NIXPKGS_LIB) return process.env.NIXPKGS_LIB;
  const tried: string[] = [];
  for (let dir = dirname(repoRoot), i = 0; i < 3; i++, dir = dirname(dir)) {
    const candidate = join(dir, 'shared/vendor/nixpkgs-lib/lib');
    if (existsSync(join(candidate, 'default.nix'))) return candidate;
    tried.push(candidate);
  }
  throw new Error(`nixpkgs lib not found (tried ${tried.join(', ')}); set NIXPKGS_LIB`);
}
export const nixpkgsLib = findNixpkgsLib();

const evalNix = join(repoRoot, 'test/nix/fixtures/eval.nix');

export interface EvalArgs {
  modules: string[];
  /** The machine's configuration, as Nix source (an attrset). */
  machine: string;
  host?: 'nixos' | 'home-manager';
}

export function evalExpr(a: EvalArgs, attr: string): string {
  return `(import ${evalNix} {
    libPath = ${nixpkgsLib};
    repoRoot = ${JSON.stringify(repoRoot)};
    node = ${JSON.stringify(process.execPath)};
    modules = [ ${a.modules.map((m) => JSON.stringify(m)).join(' ')} ];
    host = ${JSON.stringify(a.host ?? 'nixos')};
    machine = ${a.machine};
  }).${attr}`;
}

/** `nix-instantiate --eval --strict --json` (read-write: writeText files land in the store for the test to read). */
export async function nixEval(expr: string): Promise<RunResult> {
  return run('nix-instantiate', ['--read-write-mode', '--eval', '--strict', '--json', '-E', expr], { env: nixEnv(), timeoutMs: 60_000 });
}

export async function evalOk<T = any>(expr: string): Promise<T> {
  const res = await nixEval(expr);
  if (res.code !== 0) throw new Error(`evaluation failed:\n${res.stderr}`);
  return JSON.parse(res.stdout) as T;
}

/** Evaluates and expects a failure; returns stderr. */
export async function evalFails(expr: string): Promise<string> {
  const res = await nixEval(expr);
  if (res.code === 0) throw new Error(`evaluation unexpectedly succeeded: ${res.stdout.slice(0, 500)}`);
  return res.stderr;
}

export const PI_KEY = 'pi.lan-1:5Xkq8c0YV8nJx0aZ8p6dXh3yXbq6cXo8lP1jT9kqW9E=';
export const CACHE_NIXOS_ORG_KEY = 'cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=';
