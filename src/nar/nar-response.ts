import { once } from 'node:events';
import type { ServerResponse } from 'node:http';
import { parseRange } from '../protocol/range.js';

/** What the client gets: the whole NAR, one range of it, or 416. `end` is inclusive. */
export type ResponsePlan =
  | { status: 200 | 206; start: number; end: number; headers: Record<string, string> }
  | { status: 416; headers: Record<string, string> };

const BASE = { 'content-type': 'application/x-nix-nar', 'accept-ranges': 'bytes' };

/**
 * Plans the answer to a NAR request of an uncompressed NAR of `size` bytes.
 * A `Range` this server cannot parse is ignored (the whole NAR, 200), as RFC
 * 9110 allows; one that starts at or past the end is 416 with
 * `Content-Range: bytes *\/SIZE`; an end past the last byte is clamped.
 */
export function planResponse(rangeHeader: string | undefined, size: number): ResponsePlan {
  const range = parseRange(rangeHeader);
  if (!range) return { status: 200, start: 0, end: size - 1, headers: { ...BASE, 'content-length': String(size) } };
  if (range.start >= size) return { status: 416, headers: { ...BASE, 'content-range': `bytes */${size}` } };
  const end = Math.min(range.end ?? size - 1, size - 1);
  return {
    status: 206,
    start: range.start,
    end,
    headers: { ...BASE, 'content-length': String(end - range.start + 1), 'content-range': `bytes ${range.start}-${end}/${size}` },
  };
}

/**
 * Writes the part of `chunk` (the NAR's bytes from offset `at`) that the
 * plan covers, head first; resolves once the client took it (backpressure).
 * Returns the number of bytes written.
 */
export async function writePart(res: ServerResponse, plan: Extract<ResponsePlan, { start: number }>, chunk: Buffer, at: number, signal: AbortSignal, onBlocked: (blocked: boolean) => void): Promise<number> {
  const part = planned(plan, chunk, at);
  return part ? sendPart(res, plan, part, signal, onBlocked) : 0;
}

/** Writes bytes of the planned response (the head first), waiting for 'drain' when the client is slow; returns their number. */
export async function sendPart(res: ServerResponse, plan: Extract<ResponsePlan, { start: number }>, part: Buffer, signal: AbortSignal, onBlocked: (blocked: boolean) => void): Promise<number> {
  if (!res.headersSent) res.writeHead(plan.status, plan.headers);
  if (!res.write(part)) {
    onBlocked(true);
    try {
      await once(res, 'drain', { signal });
    } finally {
      onBlocked(false);
    }
  }
  return part.length;
}

/** The part of `chunk` (the NAR's bytes from offset `at`) that the plan covers, if any. */
export function planned(plan: Extract<ResponsePlan, { start: number }>, chunk: Buffer, at: number): Buffer | undefined {
  const from = Math.max(plan.start, at);
  const to = Math.min(plan.end + 1, at + chunk.length);
  return to > from ? chunk.subarray(from - at, to - at) : undefined;
}
