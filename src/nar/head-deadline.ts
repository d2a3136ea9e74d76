import { settledUnlessQuiet } from '../origins/awake-wait.js';
import type { Origin } from '../origins/origin.js';
import type { NarFile, OpenResult } from './nar-source.js';
import { SourceError } from './nar-source.js';

type Open = (origin: Origin, file: NarFile, signal: AbortSignal) => Promise<OpenResult>;

/** Windows a busy origin is given at most (the origin's own first-byte timeout ends the request well before). */
const MAX_WINDOWS = 100;

/**
 * Opens one origin's NAR, giving it `ms` to send its response head (0 or
 * undefined: no deadline beyond the origin's own first-byte timeout). Used
 * for a LAN cache when another origin could serve the NAR: a Pi that went
 * quiet (a laptop that just left home, a Pi that accepts and never answers)
 * costs `ms`, not its whole first-byte timeout, before the NAR goes on from
 * the next origin. A late answer is closed unread; its request is aborted.
 *
 * Quiet means quiet: while the origin answers other requests (a busy Wi-Fi
 * link carries its other NARs ahead of this head), the deadline moves on by
 * `ms` at a time, up to the origin's own first-byte timeout. Only a whole
 * `ms` in which it answered nothing at all gives up on it; and only time in
 * which this process was running counts (origins/awake-wait.ts): a laptop
 * too busy to read the head in time does not make the Pi slow.
 */
export async function openWithin(open: Open, origin: Origin, file: NarFile, signal: AbortSignal, ms: number | undefined): Promise<OpenResult> {
  if (!ms || ms <= 0) return open(origin, file, signal);
  const own = new AbortController();
  const follow = () => own.abort();
  if (signal.aborted) own.abort();
  else signal.addEventListener('abort', follow, { once: true });
  const opening = open(origin, file, own.signal);
  // Bounded: each window must see an answer from the origin, and its first-byte timeout ends the request.
  const early = await settledUnlessQuiet(opening, origin.breaker, ms, MAX_WINDOWS);
  if (early) return early.value; // the abort link stays: the client going away still stops this origin's body
  if (signal.aborted) return opening;
  signal.removeEventListener('abort', follow);
  own.abort();
  void opening.then((r) => {
    if (r.ok) r.nar.close();
  });
  return { ok: false, error: new SourceError('slow', `no response head within ${ms} ms, and no other answer from the origin meanwhile`) };
}
