import type { Origin } from '../origins/origin.js';
import type { NarFacts } from './candidates.js';
import { SourceError, type OpenedNar, type OpenResult } from './nar-source.js';

/** One NAR fetched ahead: its decompressed chunks in memory, while they arrive and after. */
export class Entry {
  readonly chunks: Buffer[] = [];
  bytes = 0;
  state: 'queued' | 'running' | 'done' = 'queued';
  failure: SourceError | undefined;
  opening: Promise<OpenResult> | undefined;
  nar: OpenedNar | undefined;
  readonly abort = new AbortController();
  taken = false;
  wake: (() => void) | undefined;
  timer: NodeJS.Timeout | undefined;

  constructor(
    readonly key: string,
    readonly origin: Origin,
    readonly storeHash: string,
    readonly facts: NarFacts,
  ) {}

  notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }
}

/** A prefetched NAR as the NAR route reads it: the chunks held, then the rest as it arrives. */
export class Taken implements OpenedNar {
  readonly inMemory = true;
  private closed = false;

  constructor(
    private readonly entry: Entry,
    private readonly onClose: () => void,
  ) {}

  get inputBytes(): number {
    return this.entry.nar?.inputBytes ?? 0;
  }

  get filled(): boolean {
    return this.entry.nar?.filled ?? false;
  }

  get chunks(): AsyncIterable<Buffer> {
    return this.iterate();
  }

  private async *iterate(): AsyncGenerator<Buffer> {
    const e = this.entry;
    for (;;) {
      if (this.closed) throw new SourceError('transport', 'closed');
      const chunk = e.chunks.shift();
      if (chunk) {
        yield chunk;
        continue;
      }
      if (e.failure) throw e.failure;
      if (e.state === 'done') return;
      await new Promise<void>((resolve) => (e.wake = resolve));
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.entry.notify();
    this.onClose();
  }
}
