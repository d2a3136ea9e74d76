import { memoryOf } from '../helpers/proc.js';

/** Median of a non-empty list (mean of the two middle values for an even count). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function minMax(xs: number[]): [number, number] {
  return [Math.min(...xs), Math.max(...xs)];
}

/** `median (min–max)` with `digits` decimals. */
export function summary(xs: number[], digits = 2, unit = ''): string {
  if (xs.length === 0) return 'n/a';
  const f = (x: number) => x.toFixed(digits);
  const [lo, hi] = minMax(xs);
  return xs.length === 1 ? `${f(xs[0]!)}${unit} (1 run)` : `${f(median(xs))}${unit} (${f(lo)}–${f(hi)})`;
}

export function ratio(a: number[], b: number[], digits = 2): string {
  if (!a.length || !b.length) return 'n/a';
  const mb = median(b);
  return mb === 0 ? 'n/a' : `${(median(a) / mb).toFixed(digits)}×`;
}

/** Peak resident set size (VmHWM) of a live process, in MiB. */
export async function peakRssMiB(pid: number): Promise<number> {
  return (await memoryOf(pid)).hwmMiB;
}

export function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

/** A markdown table. */
export function table(head: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [line(head), line(head.map(() => '---')), ...rows.map(line)].join('\n');
}

export interface CaseReport {
  title: string;
  /** Markdown body: how it was measured, the table, notes. */
  markdown: string;
}
