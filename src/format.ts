/** Formats a byte count for people: `512 B`, `12.3 MiB`. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${units[u]}`;
}

/** `500M`, `20G`, `1.5T`, `123456` (bytes; K/M/G/T are powers of 1024, an optional trailing `B` or `iB` is allowed); undefined if not a size. */
export function parseSize(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$/i.exec(text.trim());
  if (!m) return undefined;
  const exp = ['', 'K', 'M', 'G', 'T'].indexOf(m[2]!.toUpperCase());
  const n = Math.floor(Number(m[1]) * 1024 ** exp);
  return Number.isSafeInteger(n) ? n : undefined;
}
