import type { Readable } from 'node:stream';

/**
 * The most of an unwanted response body (an error page, a redirect, a
 * probe's answer) that is read to keep its connection for the next request.
 * Anything longer, or of unknown length, is destroyed at once: a body left
 * unread would hold its connection (and, under undici 7, killed the process
 * when the origin then closed it: nodejs/undici#5360).
 */
const DRAIN_AT_MOST = 16 * 1024;

/** Throws a body away now: its request aborted, its connection closed, no unhandled 'error' (undici's body errors when destroyed unread). */
export function discard(body: Readable): void {
  body.on('error', () => {});
  body.destroy();
}

/** A body nobody wants: drained if it is small and says so, so its connection is reused; destroyed otherwise. */
export function drop(body: Readable, headers: Record<string, string | string[] | undefined>): void {
  const length = Number(headers['content-length']);
  if (!(Number.isInteger(length) && length >= 0 && length <= DRAIN_AT_MOST)) return discard(body);
  let read = 0;
  body.on('error', () => {});
  body.on('data', (chunk: Buffer) => {
    read += chunk.length;
    if (read > DRAIN_AT_MOST) body.destroy(); // longer than it said
  });
  body.resume();
}
