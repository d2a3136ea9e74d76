import type { ServerResponse } from 'node:http';
import { errorMessage } from '../errors.js';
import type { ResponsePlan } from '../nar/nar-response.js';
import { writePart } from '../nar/nar-response.js';
import { NarCursor, NarMismatch } from '../nar/nar-verify.js';
import { dumpNar } from '../store/nar-dump.js';
import type { StorePathInfo } from '../store/local-store.js';

/**
 * Not `ok`: `sent` false means nothing went out (the caller answers with an
 * error); true, that bytes went out and the response was aborted (the
 * socket destroyed), never ended short. `mismatch`: the files are not the
 * NAR the database describes.
 */
export type LocalNarResult = { ok: true } | { ok: false; sent: boolean; mismatch: boolean; reason: string };

export interface LocalNarOptions {
  signal: AbortSignal;
  /** Waits until `n` more bytes may go (the per-client byte rate). */
  pace(n: number): Promise<void>;
  onBytes(n: number): void;
}

/**
 * Streams a path's NAR from the store's files (`dumpNar`), checked against
 * the NarHash and NarSize of its database entry as it streams: the last
 * chunk is held back until the whole NAR matched (nar/nar-verify.ts), so a
 * NAR that differs (a store file changed or corrupted on disk) is aborted,
 * never completed. A range is cut from the NAR read from byte 0.
 */
export async function sendLocalNar(res: ServerResponse, info: StorePathInfo, files: string, plan: Extract<ResponsePlan, { start: number }>, o: LocalNarOptions): Promise<LocalNarResult> {
  const cursor = new NarCursor(info.narHash, info.narSize, { length: 0, digest: undefined });
  const write = async (chunk: Buffer | undefined, at: number) => {
    if (!chunk?.length) return;
    await o.pace(chunk.length);
    const n = await writePart(res, plan, chunk, at, o.signal, () => {});
    if (n) o.onBytes(n);
  };
  try {
    for await (const chunk of dumpNar(files)) {
      if (o.signal.aborted) return { ok: false, sent: true, mismatch: false, reason: 'the client went away' };
      const at = cursor.releasedLength;
      await write(cursor.feed(chunk), at);
    }
    const at = cursor.releasedLength;
    await write(cursor.finish(), at);
  } catch (err) {
    const mismatch = err instanceof NarMismatch;
    const reason = mismatch ? `the store's files do not match the database: ${err.message}` : o.signal.aborted ? 'the client went away' : errorMessage(err);
    if (!res.headersSent) return { ok: false, sent: false, mismatch, reason };
    res.destroy();
    return { ok: false, sent: true, mismatch, reason };
  }
  if (!res.headersSent) res.writeHead(plan.status, plan.headers);
  res.end();
  return { ok: true };
}
