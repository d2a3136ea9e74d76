/**
 * The memory settings of the long-running commands (serve, fill), applied by
 * the command itself, however it was started (npx, the Nix package, a unit,
 * a shell): measured in docs/benchmarks.md (memory over a long run).
 *
 * - MALLOC_ARENA_MAX=2: glibc otherwise gives every thread that allocates an
 *   arena of its own (libuv's threadpool has 16) and keeps what they freed.
 * - MALLOC_MMAP_THRESHOLD_=131072: a Buffer of 128 KiB or more (NAR pieces)
 *   is mapped on its own and handed back to the system when freed; glibc's
 *   default raises that threshold after each such free, and the freed pieces
 *   then stay in its heap: RSS grew by a few MiB a minute under steady use.
 * - --max-semi-space-size=4: V8's young generation stays at 4 MiB halves
 *   instead of growing to 16 MiB ones under a closure's burst of requests,
 *   at the same speed.
 *
 * glibc reads its settings once, at start, and V8 sizes its heap at start:
 * so a process that lacks some re-executes itself with them (process.execve:
 * the same PID, for systemd and for anyone who started it). A setting already
 * present (the user's own) is kept.
 */
export const MEMORY_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '131072' };
export const MEMORY_FLAGS: readonly string[] = ['--max-semi-space-size=4'];

/** Set in the re-executed process: never re-execute twice. */
const MARK = 'NIX_LAN_CACHE_MEMORY_SET';

type Execve = (file: string, args: string[], env: NodeJS.ProcessEnv) => never;

/** What to add to this process's start: environment variables and Node flags it lacks. */
export function missingMemorySettings(env: NodeJS.ProcessEnv, execArgv: readonly string[]): { env: Record<string, string>; flags: string[] } {
  const given = `${execArgv.join(' ')} ${env.NODE_OPTIONS ?? ''}`;
  return {
    env: Object.fromEntries(Object.entries(MEMORY_ENV).filter(([k]) => !env[k])),
    flags: MEMORY_FLAGS.filter((f) => !given.includes(f.split('=')[0]!)),
  };
}

/** Re-executes this process with the memory settings it lacks; returns when it lacks none (or cannot re-execute). */
export function ensureMemorySettings(): void {
  const execve = (process as unknown as { execve?: Execve }).execve;
  if (process.env[MARK] || typeof execve !== 'function') return;
  const missing = missingMemorySettings(process.env, process.execArgv);
  if (Object.keys(missing.env).length === 0 && missing.flags.length === 0) return;
  execve(process.execPath, [process.execPath, ...missing.flags, ...process.execArgv, ...process.argv.slice(1)], { ...process.env, ...missing.env, [MARK]: '1' });
}
