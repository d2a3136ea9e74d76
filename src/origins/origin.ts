import type { Readable } from 'node:stream';
import type { CollectedBody } from './collect.js';
import type { NarInfo } from '../protocol/narinfo.js';
import type { CircuitState } from './breaker.js';

/**
 * lan: a static cache at home (the Pi); peer: another machine's share of its
 * own store (docs/sharing.md), asked after LAN caches, a few at once;
 * upstream: across the internet.
 */
export type OriginKind = 'lan' | 'peer' | 'upstream';

/**
 * Why an origin could not be asked, as a code the stats and logs count by
 * (never by matching the reason's text): it did not answer in time, could
 * not be reached (refused, reset, DNS), answered with a server error, is
 * skipped while its circuit is open, or the client went away first.
 */
export type FailureCause = 'timeout' | 'unreachable' | 'server-error' | 'circuit-open' | 'aborted';

/**
 * What one origin said about a narinfo. "absent" and "unknown" are different
 * facts: absent is an answer, unknown means the origin could not be asked
 * (circuit open, refused, timed out, 5xx), and routing treats them differently.
 */
export type NarInfoLookup =
  | { status: 'present'; info: NarInfo; trustedBy: string }
  /** `forged`: untrusted, and a signature names a key the origin may sign with but does not verify (a lie, not another key). */
  | { status: 'absent'; reason: 'not-found' | 'untrusted' | 'invalid'; forged?: boolean }
  | { status: 'unknown'; cause: FailureCause; reason: string };

/** One file from an origin: there (its head and body), not there, or not asked (why). */
export type Fetched<B> =
  | {
      status: 'present';
      statusCode: number;
      headers: Record<string, string | string[] | undefined>;
      body: B;
    }
  | { status: 'absent'; statusCode: number }
  | { status: 'unknown'; cause: FailureCause; reason: string };

export type FileFetch = Fetched<Readable>;

export interface FetchOptions {
  /** A `Range` header value to forward. */
  range?: string;
  method?: 'GET' | 'HEAD';
  signal?: AbortSignal;
  /** Ask even though the circuit is open: the caller has nowhere else to go (an on-demand probe). */
  evenIfOpen?: boolean;
}

/** A file read whole (a narinfo, a small compressed NAR): its body as the pieces it came in, no stream. */
export type BodyFetch = Fetched<CollectedBody>;

export interface BodyFetchOptions extends Pick<FetchOptions, 'signal' | 'evenIfOpen'> {
  /** A body longer than this is cut off (its `whole` rejects with TooLarge). */
  limit: number;
}

/** What callers see of an origin's circuit: its state and changes. Only the origin itself reports successes and failures. */
export interface CircuitView {
  readonly isOpen: boolean;
  readonly state: CircuitState;
  /** When the state last changed (ms since the epoch). */
  readonly changedAt: number;
  readonly lastReason: string;
  /** When the origin last answered anything, a response or bytes of one (ms since the epoch); 0 before its first answer. */
  readonly lastSuccessAt: number;
  on(event: 'change', listener: (state: CircuitState, reason: string) => void): unknown;
  off(event: 'change', listener: (state: CircuitState, reason: string) => void): unknown;
}

export interface Origin {
  /** Stable short id derived from the base URL; NAR URLs carry it. */
  readonly id: string;
  /** A label for logs and stats. */
  readonly name: string;
  readonly kind: OriginKind;
  readonly baseUrl: string;
  /** Lower is asked first (among LAN caches); upstreams keep their order. */
  readonly priority: number;
  readonly breaker: CircuitView;
  /**
   * A LAN cache that fills itself from upstream on a miss (`nix-lan-cache
   * fill` behind nginx): lookups wait for it instead of hedging to upstreams,
   * so a path crosses the internet once (docs/fill.md). Unset: false.
   */
  readonly fills?: boolean;
  lookupNarInfo(storeHash: string): Promise<NarInfoLookup>;
  /** Fetches a file relative to the origin's root. */
  fetchFile(path: string, options?: FetchOptions): Promise<FileFetch>;
  /** The same for a file read whole (GET): resolves at the response head, the body collects into `body.whole`. */
  fetchBody(path: string, options: BodyFetchOptions): Promise<BodyFetch>;
  /** Called by a streaming caller when the body failed after the first byte. */
  reportFailure(reason: string): void;
  /**
   * Called by a streaming caller as a body's bytes arrive: the origin is
   * answering (its circuit's lastSuccessAt), though no new response came. A
   * Pi whose link is full of NAR bytes is busy, not gone (nar/head-deadline.ts).
   * Stand-ins may leave it out.
   */
  reportProgress?(): void;
  close(): Promise<void>;
}
