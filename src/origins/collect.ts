import type { IncomingHttpHeaders } from 'node:http';
import type { Dispatcher } from './undici.js';

/** Why a collected body did not come whole: longer than the limit, or the origin's own error (undici's, with its code). */
export class TooLarge extends Error {
  override name = 'TooLarge';
}

/**
 * A response body kept as the pieces undici hands over, with no stream in
 * between: for small files read whole (narinfos, small compressed NARs),
 * undici's `request()` costs a Readable, an async resource and a promise per
 * request on top of what the data needs (measured: about half the CPU of a
 * narinfo request to nginx on loopback).
 */
export interface CollectedBody {
  /** Bytes received so far (also while arriving: the slow rule watches it). */
  readonly bytes: number;
  /** The pieces in order once the body ended; rejects with TooLarge past the limit, or with the error that broke it off. */
  readonly whole: Promise<Buffer[]>;
  /** Stops receiving (the request is aborted, its connection closed). Safe to call more than once, and after the end. */
  abort(): void;
}

export interface CollectedResponse {
  statusCode: number;
  headers: IncomingHttpHeaders;
  body: CollectedBody;
}

class Collector implements Dispatcher.DispatchHandler, CollectedBody {
  bytes = 0;
  readonly whole: Promise<Buffer[]>;
  private pieces: Buffer[] = [];
  private controller: Dispatcher.DispatchController | undefined;
  private started = false;
  private ended = false;
  private aborted: Error | undefined;
  private keep = true;
  private resolveWhole!: (pieces: Buffer[]) => void;
  private rejectWhole!: (err: Error) => void;
  private readonly onAbort = () => this.abort();

  constructor(
    private readonly limit: number,
    private readonly signal: AbortSignal | undefined,
    private readonly resolveHead: (r: CollectedResponse) => void,
    private readonly rejectHead: (err: Error) => void,
    private readonly onData: (() => void) | undefined,
  ) {
    this.whole = new Promise<Buffer[]>((resolve, reject) => {
      this.resolveWhole = resolve;
      this.rejectWhole = reject;
    });
    this.whole.catch(() => {}); // a body nobody waits for (dropped, or the caller gave up) must not be an unhandled rejection
    signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  abort(): void {
    if (this.ended || this.aborted) return;
    this.keep = false;
    this.pieces.length = 0;
    const reason: unknown = this.signal?.aborted ? this.signal.reason : undefined;
    this.aborted = reason instanceof Error ? reason : new Error('body no longer wanted');
    // Before undici started the request, it is settled now and aborted when undici starts it.
    if (this.controller) this.controller.abort(this.aborted);
    else this.finish(this.aborted);
  }

  /** An unwanted body (an error page, a redirect): read to its end if it says it is small, so its connection is kept; aborted otherwise. */
  drop(smallEnough: boolean): void {
    this.keep = false;
    this.pieces.length = 0;
    if (!smallEnough) this.abort();
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.aborted) controller.abort(this.aborted);
    else if (this.signal?.aborted) this.abort();
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    this.started = true;
    this.resolveHead({ statusCode, headers, body: this });
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.bytes += chunk.length;
    this.onData?.();
    if (this.bytes > this.limit) {
      this.keep = false;
      this.pieces.length = 0;
      controller.abort(new TooLarge(`body larger than ${this.limit} bytes`));
      return;
    }
    if (this.keep) this.pieces.push(chunk);
  }

  onResponseEnd(): void {
    this.finish(undefined);
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    this.finish(err);
  }

  private finish(err: Error | undefined): void {
    if (this.ended) return;
    this.ended = true;
    this.signal?.removeEventListener('abort', this.onAbort);
    // A body held a while (a NAR fetched ahead) keeps nothing of undici's request alive.
    this.controller = undefined;
    if (!this.started) {
      this.rejectHead(err ?? new Error('response ended before its head'));
      this.rejectWhole(err ?? new Error('no response'));
    } else if (err) this.rejectWhole(err);
    else this.resolveWhole(this.pieces);
    this.pieces = [];
  }
}

/**
 * Sends one request with undici's dispatcher and collects its body: resolves
 * at the response head (like `request()`), the body goes on arriving into
 * `body.whole`. Rejects with undici's error when no head came. `onData` is
 * called for each piece that arrives (the origin hears from its server).
 */
export function collect(dispatcher: Dispatcher, options: Dispatcher.DispatchOptions, limit: number, signal?: AbortSignal, onData?: () => void): Promise<CollectedResponse & { drop(smallEnough: boolean): void }> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
    const collector: Collector = new Collector(limit, signal, (r) => resolve({ ...r, drop: (small) => collector.drop(small) }), reject, onData);
    dispatcher.dispatch(options, collector);
  });
}
