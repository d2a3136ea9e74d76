import { formatBytes } from '../format.js';

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const mm = String(m).padStart(2, '0');
  const ss = String(sec).padStart(2, '0');
  return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

export interface ProgressState {
  pathsDone: number;
  pathsTotal: number;
  /** Uncompressed NAR bytes read from the store so far, and in total. */
  bytesDone: number;
  bytesTotal: number;
  elapsedSeconds: number;
}

/** One line: `[#####.....] 3/10 paths  12.0 MiB/40.0 MiB  4.0 MiB/s  ETA 00:07`. Pure, for tests. */
export function formatBar(s: ProgressState, width = 24): string {
  const frac = s.bytesTotal > 0 ? Math.min(1, s.bytesDone / s.bytesTotal) : s.pathsTotal > 0 ? s.pathsDone / s.pathsTotal : 1;
  const filled = Math.round(frac * width);
  const rate = s.elapsedSeconds > 0 ? s.bytesDone / s.elapsedSeconds : 0;
  const eta = rate > 0 ? (s.bytesTotal - s.bytesDone) / rate : NaN;
  return (
    `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${s.pathsDone}/${s.pathsTotal} paths  ` +
    `${formatBytes(s.bytesDone)}/${formatBytes(s.bytesTotal)}  ${formatBytes(Math.round(rate))}/s  ETA ${formatDuration(eta)}`
  );
}

/**
 * Push progress: a redrawn bar on a terminal, plain log lines (one per
 * finished path) otherwise.
 */
export class Progress {
  private state: ProgressState = { pathsDone: 0, pathsTotal: 0, bytesDone: 0, bytesTotal: 0, elapsedSeconds: 0 };
  private started = Date.now();
  private timer: NodeJS.Timeout | undefined;
  private readonly tty: boolean;

  constructor(
    private readonly out: NodeJS.WriteStream | NodeJS.WritableStream = process.stderr,
    private readonly quiet = false,
  ) {
    this.tty = (out as { isTTY?: boolean }).isTTY === true && !quiet;
  }

  start(pathsTotal: number, bytesTotal: number): void {
    this.state = { pathsDone: 0, pathsTotal, bytesDone: 0, bytesTotal, elapsedSeconds: 0 };
    this.started = Date.now();
    if (this.tty && pathsTotal > 0) {
      this.timer = setInterval(() => this.draw(), 200);
      this.timer.unref();
    }
  }

  addBytes(n: number): void {
    this.state.bytesDone += n;
  }

  /** A line of information that is not a bar update. */
  log(line: string): void {
    if (this.quiet) return;
    if (this.tty) this.out.write('\r\x1b[K');
    this.out.write(`${line}\n`);
    if (this.tty && this.timer) this.draw();
  }

  pathDone(storePath: string, fileSize: number, narSize: number): void {
    this.state.pathsDone++;
    if (!this.tty) this.log(`pushed ${storePath} (${formatBytes(narSize)} NAR, ${formatBytes(fileSize)} compressed) [${this.state.pathsDone}/${this.state.pathsTotal}]`);
  }

  private draw(): void {
    this.state.elapsedSeconds = (Date.now() - this.started) / 1000;
    this.out.write(`\r\x1b[K${formatBar(this.state)}`);
  }

  finish(): void {
    if (this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
      this.draw();
      this.out.write('\n');
    }
  }
}
