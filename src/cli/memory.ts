/**
 * The memory settings of the long-running commands (serve, fill), applied by
 * the command itself, however it was started (npx, the Nix package, a unit,
 * a shell): measured in docs/benchmarks.md (memory over a long run).
 *
 * - MALLOC_ARENA_MAX=2: glibc otherwise gives every thread that allocates an
 *   arena of its own (libuv's threadpool has 16) and keeps what they freed.
 * - MALLOC_MMAP_THRESHOLD_=32768: a Buffer of 32 KiB or more (NAR pieces,
 *   pipe and socket reads, a small decoded NAR) is mapped on its own and
 *   handed back to the system when freed; glibc's default raises that
 *   threshold after each such free, and the freed pieces then stay in its
 *   heap: RSS grew by a few MiB a minute under steady use. 131072 until
 *   issue 23: a minute after three closures glibc's heap still held ~22 MiB
 *   of freed 32-128 KiB pieces (RSS 111-116 MiB, 83 at start); with 32768,
 *   103-106 MiB at the same CPU per path. 16384 brought it to 93-94 MiB but
 *   cost ~20% more CPU per path (a map and an unmap per piece).
 * - --max-semi-space-size=4: V8's young generation stays at 4 MiB halves
 *   instead of growing to 16 MiB ones under a closure's burst of requests,
 *   at the same speed.
 * - --heap-growing-percent=100: after a full collection V8 lets the old
 *   generation grow to twice what survived before it marks again; it chose
 *   ~1.2 times here, and a closure's requests then cost a full collection
 *   every few hundred paths. Measured with Nix 2.34 at home (issue 23): 8
 *   full collections instead of 13-14 over five closures, about half the
 *   collector's background time, a few MiB more peak RSS; the memory governor
 *   (memory-governor.ts) still collects once the heap is 32 MiB above its floor.
 *
 * glibc reads its settings once, at start, and V8 sizes its heap at start:
 * so a process that lacks some re-executes itself with them (process.execve:
 * the same PID, for systemd and for anyone who started it). A setting already
 * present (the user's own) is kept.
 */
export const MEMORY_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '32768' };
export const MEMORY_FLAGS: readonly string[] = ['--max-semi-space-size=4', '--heap-growing-percent=100'];

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
