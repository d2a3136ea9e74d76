/**
 * How late a window's timer may fire, beyond its length, and still count: a
 * loop that was this busy (decompressing, verifying signatures) read its
 * sockets in time. Later than this, this process itself was not running (a
 * build on every core, a laptop swapping or waking up).
 */
export function lateSlackMs(ms: number): number {
  return Math.max(25, ms / 4);
}

/** Windows one wait starts at most: a process starved for this long gives up on leniency. */
const MAX_VOID_WINDOWS = 20;

/**
 * Resolves after `ms` in which this process was awake to hear an answer: a
 * deadline on an origin ("no answer within 200 ms") that does not blame the
 * origin for the time this process itself could not run. Two things make a
 * plain timer lie on a loaded machine, and both are handled here:
 *
 * - The answer came while the event loop was blocked: when a timer and a
 *   socket are both ready, the timer runs first, and the answer already in
 *   the socket would be read only after the deadline gave up. So a timer
 *   that fired late yields to I/O once (setImmediate runs after the loop's
 *   poll phase) before the wait resolves; a promise settled by that I/O wins
 *   a race with it.
 * - The window's timer fired late (by more than `lateSlackMs`): for much of
 *   the window this process was not running. That window does not count;
 *   another starts. At most MAX_VOID_WINDOWS, so the wait is bounded.
 *
 * It resolves at once when `signal` aborts (what it waited for came).
 */
export async function awakeFor(ms: number, signal?: AbortSignal): Promise<void> {
  for (let i = 0; i < MAX_VOID_WINDOWS && !signal?.aborted; i++) {
    const start = Date.now();
    await sleep(ms, signal);
    if (signal?.aborted || Date.now() - start <= ms) return; // on time: the loop was keeping up, and read what came
    await new Promise((resolve) => setImmediate(resolve));
    if (Date.now() - start - ms <= lateSlackMs(ms)) return;
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** `{ value }` if `p` settles within `ms` of this process being awake (awakeFor), undefined otherwise. */
export async function settledWithin<T>(p: Promise<T>, ms: number): Promise<{ value: T } | undefined> {
  const came = new AbortController();
  let settled: { value: T } | undefined;
  const watched = p.then((value) => (settled = { value })).finally(() => came.abort());
  await Promise.race([watched, awakeFor(ms, came.signal)]);
  came.abort();
  return settled;
}

/**
 * `{ value }` once `p` (a request to an origin) settles; undefined once a
 * whole window of `ms` (awake, as above) went by in which the origin
 * answered nothing at all, or after `maxWindows` windows. Quiet means quiet:
 * while the origin answers other requests (a busy Wi-Fi link carries other
 * answers ahead of this one; a laptop's proxy is slow to read them), it is
 * not hanging, and this request is waited for a window more.
 */
export async function settledUnlessQuiet<T>(p: Promise<T>, origin: { readonly lastSuccessAt: number }, ms: number, maxWindows: number): Promise<{ value: T } | undefined> {
  for (let i = 0; i < maxWindows; i++) {
    const windowStart = Date.now();
    const early = await settledWithin(p, ms);
    if (early) return early;
    if (origin.lastSuccessAt <= windowStart) return undefined; // nothing since it started (an answer in the same millisecond came before it)
  }
  return undefined;
}
