import type { Writable } from 'node:stream';

/** Resolves when `stream` can take more, or is gone (closed, destroyed, failed); leaves no listener behind. */
export function drainedOrGone(stream: Writable): Promise<void> {
  if (stream.destroyed || stream.writableEnded) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      stream.off('error', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
    stream.on('error', done);
  });
}
