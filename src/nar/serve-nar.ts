import type { ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { AppError, errorMessage } from '../errors.js';
import type { Sha256 } from '../protocol/hash.js';
import type { Origin } from '../origins/origin.js';
import type { NarStats } from './nar-stats.js';
import { candidates, hasAlternative, type Candidate, type CandidateDeps, type SearchTrail } from './candidates.js';
import { planResponse, type ResponsePlan } from './nar-response.js';
import type { Holds } from './nar-hold.js';
import { NarWriter } from './nar-writer.js';
import { openWithin } from './head-deadline.js';
import { openNar, SourceError, type SourceFailure } from './nar-source.js';
import { NarCursor, NarMismatch, type Released } from './nar-verify.js';
import { DEFAULT_SLOW_RULE, RateWatch, type SlowRule } from './rate-watch.js';

export interface NarDeps extends CandidateDeps {
  stats: NarStats;
  log: Logger;
  slowRule?: SlowRule;
  /** Writes a JSON error answer (the server's one error mapping) before any byte of the NAR went out. */
  writeError(res: ServerResponse, err: AppError): void;
  /**
   * Opens one origin's NAR (default: `openNar`, over HTTP). The NAR
   * prefetcher (nar/nar-prefetch.ts) hands out a NAR it fetched ahead into
   * memory here; it is verified like any other.
   */
  open?: typeof openNar;
  /**
   * A LAN cache (not a filling one) must send a NAR's response head within
   * this long when another origin could serve it; otherwise the NAR goes on
   * from the next origin and the cache is marked slow (0 or unset: no such
   * deadline). The proxy uses the LAN hedge delay.
   */
  lanHeadMs?: number;
  /**
   * Where a NAR from a LAN cache or a peer is held back until verified, when
   * another origin could serve it (unset: streamed as it comes).
   */
  holds?: Holds;
  /** A hold longer than this is sent and the rest streamed (default HOLD_MAX_MS). */
  maxHoldMs?: number;
}

/** Nix gives up on a transfer that sends nothing for 300 s (stalled-download-timeout); a hold stays well under it. */
export const HOLD_MAX_MS = 60_000;

export interface NarRequest {
  storeHash: string;
  narHash: Sha256;
  method: 'GET' | 'HEAD';
  range: string | undefined;
}

/** `held`: the origin's bytes were all held back, so the client got none of them. */
type Served = { done: true } | { done: false; failure: SourceFailure | 'prefix'; reason: string; held?: boolean };

/**
 * Serves the uncompressed NAR with this NarHash, whole or a range of it, from
 * any origin that has it: each origin's file is read from byte 0,
 * decompressed, checked to be a NAR and hashed. If an origin fails half-way,
 * the next one is read from 0 and the response goes on at the same offset
 * (after checking that its bytes so far hash like those already sent). The
 * last bytes are held back until NarSize and NarHash match; a LAN cache's or
 * a peer's NAR that another origin could serve is held back whole (nar-hold.ts),
 * so a corrupt copy never reaches Nix. Only when no
 * origin can serve the rest is the response aborted (the socket destroyed),
 * never ended short.
 */
export async function serveNar(req: NarRequest, res: ServerResponse, deps: NarDeps): Promise<void> {
  const abort = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) abort.abort();
  });
  let child: Logger | undefined;
  const log = () => (child ??= deps.log.child({ storeHash: req.storeHash }));
  const trail: SearchTrail = { unknown: false, quarantined: 0 };
  const list = candidates(req.storeHash, req.narHash, deps, trail);
  const first = (await list.next()).value;
  if (!first) {
    const err = trail.unknown
      ? new AppError('ORIGINS_UNAVAILABLE', `no reachable origin can serve the NAR of ${req.storeHash}`)
      : new AppError('NOT_IN_ANY_ORIGIN', `no origin has the NAR of ${req.storeHash}${trail.quarantined ? ` (${trail.quarantined} quarantined)` : ''}`);
    log().warn({ code: err.code, quarantined: trail.quarantined }, err.message);
    if (!abort.signal.aborted) deps.writeError(res, err);
    return;
  }
  const size = first.facts.narSize;
  const plan = planResponse(req.range, size);
  if (plan.status === 416 || req.method === 'HEAD') {
    res.writeHead(plan.status, plan.headers);
    res.end();
    return;
  }

  let released: Released = { length: 0, digest: undefined };
  let failed: { origin: Origin; failure: string } | undefined;
  let onlyAbsent = true; // every origin tried said it has no such file (404) or holds it in a form the proxy cannot read
  for (let c: Candidate | undefined = first; c; c = (await list.next()).value) {
    if (abort.signal.aborted) return;
    if (c.facts.narSize !== size) continue; // the same NarHash with another NarSize: one of them is wrong; keep to the first
    if (failed) {
      deps.stats.failover(failed.origin.name, c.origin.name, req.storeHash);
      log().info({ from: failed.origin.name, to: c.origin.name, offset: released.length, why: failed.failure }, 'NAR failover');
    }
    const cursor = new NarCursor(req.narHash, size, released);
    const result = await pump(c, cursor, plan, res, abort.signal, req.storeHash, deps);
    if (result.done) return;
    if (!result.held) released = cursor.releasedState();
    if (abort.signal.aborted) return; // the client went away; nothing to save
    failed = { origin: c.origin, failure: result.failure };
    if (result.failure !== 'absent' && result.failure !== 'unsupported') onlyAbsent = false;
    record(c, result, released.length, req.storeHash, deps, log());
    if (result.failure === 'prefix') break;
  }

  if (!res.headersSent) {
    const err =
      onlyAbsent && !trail.unknown
        ? new AppError('NOT_IN_ANY_ORIGIN', `no origin has a NAR file it can serve for ${req.storeHash}`)
        : new AppError('ORIGINS_UNAVAILABLE', `no origin could serve the NAR of ${req.storeHash}`);
    log().warn({ code: err.code }, err.message);
    deps.writeError(res, err);
    return;
  }
  log().error({ event: 'nar-aborted', offset: released.length }, 'NAR interrupted and no origin can serve the rest; aborting the response');
  res.destroy();
}

/** Streams one origin's NAR into the response; `done` once the whole planned response is out and verified. */
async function pump(c: Candidate, cursor: NarCursor, plan: Extract<ResponsePlan, { start: number }>, res: ServerResponse, signal: AbortSignal, storeHash: string, deps: NarDeps): Promise<Served> {
  // LAN caches and peers (any origin on the LAN, not an upstream) get the head deadline, the slow rule and the hold,
  // while another origin might serve; an open circuit asked as the last resort has none left.
  const onLan = c.origin.kind !== 'upstream' && !c.facts.evenIfOpen && hasAlternative(c.origin, storeHash, deps);
  const opened = await openWithin(deps.open ?? openNar, c.origin, c.facts, signal, onLan && !c.origin.fills ? deps.lanHeadMs : undefined);
  if (!opened.ok) return { done: false, failure: opened.error.failure, reason: opened.error.message };
  const nar = opened.nar;
  deps.stats.narStarted(c.origin.name);
  let slow: string | undefined;
  // A filling LAN cache streams a miss at upstream's pace: leaving it for upstream would fetch the path twice.
  const fillSource = c.origin.fills ? (nar.filled ? 'filled' : 'already-there') : undefined;
  const checked = onLan && !(c.origin.fills && nar.filled);
  const watch = checked
    ? new RateWatch(deps.slowRule ?? DEFAULT_SLOW_RULE, () => nar.inputBytes, (rate) => {
        slow = `${Math.round(rate)} bytes/s`;
        nar.close();
      })
    : undefined;
  const writer = new NarWriter(res, plan, signal, (b) => watch?.blocked(b), (n) => deps.stats.narBytes(c.origin.name, n, fillSource));
  if (checked && deps.holds) {
    const hold = nar.inMemory ? deps.holds.reserved() : await deps.holds.open(plan.end + 1 - Math.max(plan.start, cursor.releasedLength));
    deps.stats.narHeld(c.origin.name, hold?.where ?? 'none');
    if (hold) writer.holdBack(hold, deps.maxHoldMs ?? HOLD_MAX_MS);
  }
  watch?.start();
  const slowReason = () => `slower than ${(deps.slowRule ?? DEFAULT_SLOW_RULE).minBytesPerSecond} bytes/s: ${slow}`;
  try {
    for await (const chunk of nar.chunks) {
      const at = cursor.releasedLength;
      await writer.write(cursor.feed(chunk), at);
    }
    if (slow) return { done: false, failure: 'slow', reason: slowReason(), held: writer.holding };
    const at = cursor.releasedLength;
    await writer.write(cursor.finish(), at);
    await writer.release();
    if (!res.headersSent) res.writeHead(plan.status, plan.headers);
    res.end();
    return { done: true };
  } catch (err) {
    const held = writer.holding;
    if (slow) return { done: false, failure: 'slow', reason: slowReason(), held };
    if (err instanceof NarMismatch) return { done: false, failure: err.kind === 'prefix-mismatch' ? 'prefix' : 'content', reason: err.message, held };
    if (err instanceof SourceError) return { done: false, failure: err.failure, reason: err.message, held };
    return { done: false, failure: 'transport', reason: errorMessage(err), held };
  } finally {
    watch?.stop();
    writer.discard();
    nar.close();
  }
}

/** Logs and counts one origin's failure, and acts on it: breaker, quarantine or slow mark. */
function record(c: Candidate, result: Extract<Served, { done: false }>, offset: number, storeHash: string, deps: NarDeps, log: Logger): void {
  const origin = c.origin;
  const ctx = { origin: origin.name, offset, failure: result.failure, reason: result.reason };
  switch (result.failure) {
    case 'absent':
    case 'unsupported':
      deps.stats.narUnavailable(origin.name, 'absent');
      log.info(ctx, 'NAR not available from origin');
      return;
    case 'unavailable':
      deps.stats.narUnavailable(origin.name, 'unavailable');
      log.info(ctx, 'NAR not available from origin');
      return;
    case 'transport':
      deps.stats.narError(origin.name);
      origin.reportFailure(`NAR: ${result.reason}`);
      log.warn(ctx, 'NAR transfer from origin failed');
      return;
    case 'slow':
      deps.stats.narError(origin.name);
      deps.slow.mark(origin, c.facts.url);
      log.warn(ctx, 'NAR transfer from origin stalled or too slow; going on from the next origin');
      return;
    case 'content':
      deps.stats.narQuarantined(origin.name, storeHash, result.reason);
      deps.quarantine.add(origin.id, { origin: origin.name, storeHash, reason: result.reason, at: new Date().toISOString() });
      log.error({ ...ctx, event: 'nar-quarantine' }, `origin ${origin.name}'s NAR of ${storeHash} is not what its signed narinfo says; quarantined`);
      return;
    case 'prefix':
      log.error(ctx, 'origins disagree on bytes already sent; aborting the response');
      return;
  }
}
