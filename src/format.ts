/**
 * Numbers for people, in one place for the CLI and the status page: the page
 * loads these very functions as `_/assets/format.js` (their source is served
 * as an ES module), so each must stay self-contained: no imports, no helpers
 * from module scope.
 */

/** A byte count: `512 B`, `5.5 KiB`, `12.3 MiB`. */
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

/** How long ago an ISO time was, seen at `now` (ms): `12 s ago`, `3 min ago`, `2 h ago`, `5 d ago`; '' for none. */
export function formatAge(iso: string | null | undefined, now: number): string {
  if (!iso) return '';
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** A ratio as a percentage, `–` when there is none yet. */
export function formatPct(r: number | null | undefined): string {
  return r === null || r === undefined ? '–' : `${(r * 100).toFixed(1)}%`;
}

/** The browser module the status page imports: the functions above, as they run here. */
export function formatModuleSource(): string {
  return [formatBytes, formatAge, formatPct].map((f) => `export ${f.toString()}\n`).join('');
}

/** `500M`, `20G`, `1.5T`, `123456` (bytes; K/M/G/T are powers of 1024, an optional trailing `B` or `iB` is allowed); undefined if not a size. */
export function parseSize(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$/i.exec(text.trim());
  if (!m) return undefined;
  const exp = ['', 'K', 'M', 'G', 'T'].indexOf(m[2]!.toUpperCase());
  const n = Math.floor(Number(m[1]) * 1024 ** exp);
  return Number.isSafeInteger(n) ? n : undefined;
}
