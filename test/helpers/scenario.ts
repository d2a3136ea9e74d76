import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { cli } from './cache.js';
import { Nginx } from './nginx.js';
import { buildClosure, generateKey, makeStaticCache, nixEnv, substitute, tempDir, removeDir, type CacheKey, type Closure, type Leaf } from './nix.js';
import type { NixClient } from './nix-clients.js';
import type { RunResult } from './proc.js';

/**
 * The household in one place: a closure built by real Nix, a "Pi" static
 * cache (xz, signed by the Pi's key) and an "upstream" static cache (zstd,
 * signed by its own key), each served by a real nginx on 127.0.0.1.
 */
export interface Household {
  dir: string;
  closure: Closure;
  piKey: CacheKey;
  upstreamKey: CacheKey;
  piDir: string;
  upstreamDir: string;
  pi: Nginx;
  upstream: Nginx;
  /** Real Nix, as a fresh client machine, substituting the closure from `substituter`. */
  fetch(substituter: string, opts?: { xdgCache?: string; timeoutMs?: number; store?: string; client?: NixClient; extraOptions?: string[] }): Promise<RunResult & { store: string }>;
  trustedKeys: string[];
  cleanup(): Promise<void>;
}

export async function household(salt: string, leaves: Leaf[], options: { piLimitRate?: string; /** Fill the Pi with `nix-lan-cache push` (xz) instead of `nix copy`. */ piByPush?: boolean } = {}): Promise<Household> {
  const dir = await tempDir(salt);
  const closure = await buildClosure(salt, leaves);
  const piKey = await generateKey(dir, 'pi.lan-1');
  const upstreamKey = await generateKey(dir, 'upstream-1');
  const piDir = join(dir, 'pi-cache');
  const upstreamDir = join(dir, 'upstream-cache');
  const byPush = async () => {
    const res = await cli(['push', '--to', piDir, '--key-file', piKey.secretFile, '--quiet', closure.root], { env: nixEnv(), timeoutMs: 300_000 });
    if (res.code !== 0) throw new Error(`push failed: ${res.stderr}`);
  };
  await Promise.all([
    options.piByPush ? byPush() : makeStaticCache(piDir, [closure.root], piKey, 'xz'),
    makeStaticCache(upstreamDir, [closure.root], upstreamKey, 'zstd'),
  ]);
  await mkdir(join(dir, 'pi-nginx'));
  await mkdir(join(dir, 'upstream-nginx'));
  const pi = await Nginx.start({ root: piDir, workDir: join(dir, 'pi-nginx'), ...(options.piLimitRate ? { limitRate: options.piLimitRate } : {}) });
  const upstream = await Nginx.start({ root: upstreamDir, workDir: join(dir, 'upstream-nginx') });
  const trustedKeys = [piKey.publicKey, upstreamKey.publicKey];
  let n = 0;
  return {
    dir,
    closure,
    piKey,
    upstreamKey,
    piDir,
    upstreamDir,
    pi,
    upstream,
    trustedKeys,
    async fetch(substituter, opts = {}) {
      const store = opts.store ?? join(dir, `client-${++n}`);
      const xdgCache = opts.xdgCache ?? join(dir, `xdg-${n}`);
      const res = await substitute(store, [closure.root], substituter, { xdgCache, trustedKeys, timeoutMs: opts.timeoutMs ?? 120_000, ...(opts.client ? { client: opts.client } : {}), ...(opts.extraOptions ? { extraOptions: opts.extraOptions } : {}) });
      return { ...res, store };
    },
    async cleanup() {
      await Promise.all([pi.stop(), upstream.stop()]);
      await removeDir(dir);
    },
  };
}
