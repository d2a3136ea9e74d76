/** A single byte range `bytes=START-[END]`, the only form Nix and curl send when resuming. */
export interface ByteRange {
  start: number;
  end?: number;
}

/** undefined: no Range header; null: a Range this server can't honour (answered with the whole file). */
export function parseRange(header: string | undefined): ByteRange | undefined | null {
  if (header === undefined) return undefined;
  const m = /^bytes=(\d{1,15})-(\d{0,15})$/.exec(header.trim());
  if (!m) return null;
  const start = Number(m[1]);
  const end = m[2] ? Number(m[2]) : undefined;
  if (end !== undefined && end < start) return null;
  return end === undefined ? { start } : { start, end };
}

export function formatRange(range: ByteRange): string {
  return `bytes=${range.start}-${range.end ?? ''}`;
}
