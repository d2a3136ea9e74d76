import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

export interface MemoryGovernorOptions {
  /** Memory in Buffers (ArrayBuffers) this far above its lowest since the last collection starts one. */
  slackBytes: number;
  /** V8's heap this far above its lowest since the last collection starts one too. */
  heapSlackBytes?: number;
  /** How often memory is looked at. */
  everyMs: number;
  /** At most one collection this often. */
  minGapMs: number;
}

export const DEFAULT_GOVERNOR: MemoryGovernorOptions = { slackBytes: 16 * 1024 * 1024, heapSlackBytes: 32 * 1024 * 1024, everyMs: 250, minGapMs: 1000 };

type Gc = (options: { type: 'major'; execution: 'async' }) => void;

/**
 * Starts a garbage collection when Buffers pile up. A NAR passes through the
 * proxy as Buffers that live from milliseconds to seconds (fetched ahead,
 * held until Nix comes); those that lived long enough to be promoted are
 * freed only by a full collection, and V8 starts one for memory outside its
 * heap only after ~64 MB of it has accumulated: on a busy proxy, tens of MiB
 * of dead NAR bytes in RSS at any time (docs/benchmarks.md, memory). So when
 * the memory held in Buffers is `slackBytes` above its lowest point since the
 * last collection, an incremental major collection is started (asynchronous:
 * marking runs concurrently; at most one per `minGapMs`). Live data (NARs
 * really held) raises the floor, so a full budget of held NARs does not make
 * it collect again and again.
 *
 * The same for V8's own heap (`heapSlackBytes`): under a burst of narinfo
 * requests (25 clients, each waiting on a lookup) request objects outlive
 * two young collections and are promoted, and V8 let the old generation grow
 * to ~80 MB of mostly dead objects before collecting it (issue 23: 204 MiB
 * of RSS under the narinfo load benchmark). A closure's steady traffic moves
 * the heap by a few MiB and never reaches the slack.
 */
export class MemoryGovernor {
  private readonly gc: Gc;
  private readonly timer: NodeJS.Timeout;
  private floor: number;
  private heapFloor: number;
  private lastGc = 0;
  /** Collections started so far. */
  collections = 0;

  constructor(private readonly options: MemoryGovernorOptions = DEFAULT_GOVERNOR) {
    setFlagsFromString('--expose-gc');
    this.gc = runInNewContext('gc') as Gc;
    const { arrayBuffers, heapUsed } = process.memoryUsage();
    this.floor = arrayBuffers;
    this.heapFloor = heapUsed;
    this.timer = setInterval(() => this.check(), options.everyMs);
    this.timer.unref();
  }

  /** Looks at memory now (the timer does this every `everyMs`); starts a collection if Buffers or V8's heap piled up. */
  check(): void {
    const { arrayBuffers: held, heapUsed } = process.memoryUsage();
    this.floor = Math.min(this.floor, held);
    this.heapFloor = Math.min(this.heapFloor, heapUsed);
    const now = Date.now();
    const piled = held - this.floor >= this.options.slackBytes || heapUsed - this.heapFloor >= (this.options.heapSlackBytes ?? Infinity);
    if (!piled || now - this.lastGc < this.options.minGapMs) return;
    this.lastGc = now;
    this.floor = held;
    this.heapFloor = heapUsed;
    this.collections++;
    this.gc({ type: 'major', execution: 'async' });
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
