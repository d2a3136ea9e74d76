import { enableCompileCache } from 'node:module';
import { join } from 'node:path';

/**
 * Where V8's compiled code for the services' modules is kept between runs
 * (Node's module compile cache): `$CACHE_DIRECTORY` (a unit with
 * `CacheDirectory=`), else `$XDG_CACHE_HOME/nix-lan-cache`, else
 * `~/.cache/nix-lan-cache`; none when there is no home to put it in.
 */
export function compileCacheDir(env: NodeJS.ProcessEnv): string | undefined {
  const systemd = env.CACHE_DIRECTORY?.split(':')[0];
  if (systemd) return join(systemd, 'compile-cache');
  if (env.XDG_CACHE_HOME?.startsWith('/')) return join(env.XDG_CACHE_HOME, 'nix-lan-cache', 'compile-cache');
  if (env.HOME?.startsWith('/') && env.HOME !== '/') return join(env.HOME, '.cache', 'nix-lan-cache', 'compile-cache');
  return undefined;
}

/**
 * A proxy started fresh compiles each function the first time a request
 * needs it; with the cache a new process reads what the last one compiled
 * (Node writes it when the process exits). Measured with Nix 2.34 at home:
 * ~7% less CPU per path for a fresh proxy (docs/benchmarks.md). Left alone
 * when the user set NODE_COMPILE_CACHE (or NODE_DISABLE_COMPILE_CACHE);
 * a directory it cannot write leaves it off, without an error.
 */
export function useCompileCache(env: NodeJS.ProcessEnv = process.env): void {
  if (env.NODE_COMPILE_CACHE !== undefined || env.NODE_DISABLE_COMPILE_CACHE !== undefined) return;
  const dir = compileCacheDir(env);
  if (dir) enableCompileCache(dir);
}
