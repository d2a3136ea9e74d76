import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import { once } from 'node:events';
import type { Logger } from 'pino';
import { AppError, errorMessage } from '../errors.js';
import { parseSha256, type Sha256 } from '../protocol/hash.js';
import type { LegacyNarRef } from '../protocol/narurl.js';
import { formatRange, parseRange } from '../protocol/range.js';
import type { Origin } from '../origins/origin.js';
import type { OriginSet } from '../origins/origin-set.js';
import type { NarStats } from './nar-stats.js';
import type { NarInfoAccess } from './candidates.js';
import { discard } from '../origins/body.js';
import { createTranscoder } from './transcode.js';

export interface LegacyNarDeps {
  origins: OriginSet;
  infos: NarInfoAccess;
  stats: NarStats;
  log: Logger;
  writeError(res: ServerResponse, err: AppError): void;
}

/** One place the NAR could come from. `identical`: the very same file, so a byte offset means the same there. */
interface Source {
  origin: Origin;
  path: string;
  identical: boolean;
  /** Its file's compression, and sizes (for the decoder) when it is not the one promised. */
  compression: string;
  fileSize?: number | undefined;
  narSize?: number | undefined;
}

/**
 * Legacy NAR URLs: those handed out before NARs were served uncompressed
 * (protocol/narurl.ts). Nix may hold their narinfos for 30 days, and those
 * promised a compression, so the origin's compressed file is passed through
 * as before. Tries the NAR's own origin
 * first; if it fails before the first byte, any other origin whose trusted
 * narinfo has the same NarHash: its file passed through when it has the
 * compression promised, re-compressed into it otherwise (nar/transcode.ts;
 * Nix from 2.22 on decodes only what the narinfo names). If an origin
 * dies mid-stream, the stream continues from an origin holding the identical
 * file; when there is none, the response is aborted, never ended cleanly, so
 * Nix sees a transfer error instead of a short NAR.
 */
export async function streamLegacyNar(
  ref: LegacyNarRef,
  method: 'GET' | 'HEAD',
  headers: IncomingHttpHeaders,
  res: ServerResponse,
  deps: LegacyNarDeps,
): Promise<void> {
  // A child logger costs more than a NAR request's other work: make it only when there is something to say.
  let child: Logger | undefined;
  const log = () => (child ??= deps.log.child({ storeHash: ref.storeHash }));
  const requested = parseRange(typeof headers.range === 'string' ? headers.range : undefined) ?? undefined;
  const abort = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) abort.abort();
  });

  const expectedFile = expectedFileHash(ref, deps.infos);
  let headSent = false;
  let offset = requested?.start ?? 0; // absolute offset of the next byte the client needs
  let failedOrigin: Origin | undefined;
  let sawUnknown = false;

  for await (const source of sources(ref, expectedFile, deps)) {
    if (abort.signal.aborted) return;
    if ((headSent || offset > 0) && !source.identical) continue; // a byte offset into another file means nothing
    // Another compression than promised: that file is re-compressed, whole; a range of bytes made here means nothing.
    const recompress = source.compression !== ref.compression;
    if (recompress && requested) continue;
    // Ask the origin for a range only when the client did or when resuming.
    const rangeHeader =
      (headSent || requested) && (offset > 0 || requested?.end !== undefined)
        ? formatRange({ start: offset, ...(requested?.end !== undefined ? { end: requested.end } : {}) })
        : undefined;
    const fetched = await source.origin.fetchFile(source.path, { method, signal: abort.signal, ...(rangeHeader ? { range: rangeHeader } : {}) });
    if (fetched.status !== 'present') {
      if (fetched.status === 'unknown') sawUnknown = true;
      deps.stats.narUnavailable(source.origin.name, fetched.status === 'absent' ? 'absent' : 'unavailable');
      log().info({ origin: source.origin.name, result: fetched.status, reason: fetched.status === 'unknown' ? fetched.reason : fetched.statusCode }, 'NAR not available from origin');
      failedOrigin ??= source.origin;
      continue;
    }
    if (rangeHeader && fetched.statusCode !== 206) {
      discard(fetched.body); // the origin ignored the range; its bytes would not line up
      sawUnknown = true;
      log().info({ origin: source.origin.name, status: fetched.statusCode }, 'origin ignored the Range of a legacy NAR URL');
      continue;
    }
    const transcoder = recompress && method === 'GET' ? createTranscoder(source.compression, ref.compression, source.fileSize, source.narSize) : undefined;
    if (recompress && method === 'GET' && !transcoder) {
      discard(fetched.body);
      log().info({ origin: source.origin.name, from: source.compression, to: ref.compression }, 'cannot re-compress a legacy NAR into the compression promised');
      continue;
    }
    if (failedOrigin && failedOrigin !== source.origin) {
      deps.stats.failover(failedOrigin.name, source.origin.name, ref.storeHash);
      log().info({ from: failedOrigin.name, to: source.origin.name, offset }, 'NAR failover');
    }
    deps.stats.narStarted(source.origin.name);
    if (!headSent) {
      writeHead(res, fetched.statusCode, recompress ? {} : fetched.headers, requested !== undefined, !recompress);
      headSent = true;
      if (method === 'HEAD') {
        discard(fetched.body);
        res.end();
        return;
      }
    }
    if (transcoder) {
      fetched.body.once('error', (err) => transcoder.output.destroy(err)); // pipe() does not pass errors on
      fetched.body.pipe(transcoder.input);
    }
    try {
      for await (const chunk of (transcoder?.output ?? fetched.body) as AsyncIterable<Buffer>) {
        offset += chunk.length;
        deps.stats.narBytes(source.origin.name, chunk.length);
        if (!res.write(chunk)) await drained(res, abort.signal);
      }
      res.end();
      return;
    } catch (err) {
      discard(fetched.body);
      transcoder?.destroy();
      if (abort.signal.aborted) return; // the client went away; nothing to save
      const reason = `NAR body failed at byte ${offset}: ${errorMessage(err)}`;
      source.origin.reportFailure(reason);
      deps.stats.narError(source.origin.name);
      log().warn({ origin: source.origin.name, offset }, reason);
      failedOrigin = source.origin;
    }
  }

  if (!headSent) {
    const err = sawUnknown
      ? new AppError('ORIGINS_UNAVAILABLE', `no reachable origin can serve the NAR of ${ref.storeHash}`)
      : new AppError('NOT_IN_ANY_ORIGIN', `no origin has the NAR of ${ref.storeHash}`);
    log().warn({ code: err.code }, err.message);
    deps.writeError(res, err);
    return;
  }
  log().error({ offset }, 'NAR interrupted and no origin holds the identical file to resume from; aborting the response');
  res.destroy();
}

/** The NAR's own origin first, then every other origin whose trusted narinfo describes the same NAR. */
async function* sources(ref: LegacyNarRef, expectedFile: Sha256 | undefined, deps: LegacyNarDeps): AsyncGenerator<Source> {
  const own = deps.origins.get(ref.originId);
  if (own) yield { origin: own, path: ref.originUrl, identical: true, compression: ref.compression };
  for (const origin of deps.origins.ordered()) {
    if (origin === own || origin.breaker.isOpen) continue;
    const found = await deps.infos.ask(origin, ref.storeHash);
    if (found.status !== 'present') continue;
    const info = found.info;
    if (info.narHash !== ref.narHash) continue;
    const identical = expectedFile !== undefined && info.fileHash === expectedFile && info.compression === ref.compression;
    yield { origin, path: info.url, identical, compression: info.compression, fileSize: info.fileSize, narSize: info.narSize };
  }
}

/** The FileHash of the NAR file the client was promised, from the cached narinfo or the static cache's file name. */
function expectedFileHash(ref: LegacyNarRef, infos: NarInfoAccess): Sha256 | undefined {
  const cached = infos.cached(ref.storeHash);
  if (cached && cached.origin.id === ref.originId && cached.facts.fileHash) return cached.facts.fileHash;
  const m = /(?:^|\/)([0-9a-df-np-sv-z]{52})\.nar(?:\.[a-z0-9]+)?$/.exec(ref.originUrl);
  return m ? parseSha256(`sha256:${m[1]}`) : undefined;
}

function writeHead(res: ServerResponse, status: number, headers: Record<string, string | string[] | undefined>, ranged: boolean, resumable: boolean): void {
  const out: Record<string, string> = { 'content-type': 'application/x-nix-nar', ...(resumable ? { 'accept-ranges': 'bytes' } : {}) };
  const length = headers['content-length'];
  if (typeof length === 'string') out['content-length'] = length;
  const contentRange = headers['content-range'];
  if (ranged && status === 206 && typeof contentRange === 'string') out['content-range'] = contentRange;
  res.writeHead(ranged && status === 206 ? 206 : 200, out);
}

async function drained(res: ServerResponse, signal: AbortSignal): Promise<void> {
  await once(res, 'drain', { signal });
}
