import { createConnection, createServer, type Server, type Socket } from 'node:net';

/**
 * A link on loopback (this kernel has no netem): a TCP relay in front of a
 * server that adds latency each way and limits the rate shared by all its
 * connections (one wire), keeping each connection's bytes in order. It can
 * also go away and come back, as a Pi on a laptop's Wi-Fi does:
 *
 * - `up`: bytes flow;
 * - `blackhole`: connections are accepted and nothing flows either way (a Pi
 *   that hangs, a link that drops every packet); bytes held while it lasts
 *   flow again when the link is back up, as TCP would retransmit them;
 * - `refused`: nothing listens (new connections are refused) and every open
 *   connection is closed with a FIN toward the client, as when the Pi's
 *   nginx dies mid-response.
 */
export type LinkMode = 'up' | 'blackhole' | 'refused';

export interface LinkProfile {
  /** Added to every chunk, each way (half the round trip). */
  latencyMs: number;
  /** Bytes per second toward the clients (the download direction), shared by all connections; 0: unlimited. */
  downBytesPerSec: number;
  /** Bytes per second toward the target; 0: unlimited. */
  upBytesPerSec?: number;
}

/** The links the tests and benchmarks use (issue 22: a home link, not only loopback). */
export const LINKS = {
  /** Wi-Fi at home: 2 ms each way, 100 Mbit/s shared. */
  wifi: { latencyMs: 2, downBytesPerSec: 12_500_000, upBytesPerSec: 12_500_000 },
  /** Gigabit Ethernet: 0.2 ms each way, 1 Gbit/s shared. */
  gigabit: { latencyMs: 0.2, downBytesPerSec: 125_000_000, upBytesPerSec: 125_000_000 },
  /** The slow internet link of a student flat: 25 ms each way, 2.5 MB/s shared. */
  slow: { latencyMs: 25, downBytesPerSec: 2_500_000 },
} satisfies Record<string, LinkProfile>;

export interface LinkOptions extends LinkProfile {
  /** Where the relay forwards to. */
  target: { host: string; port: number };
  /** A fixed port to listen on (default: one the kernel picks). */
  port?: number;
}

export interface Link {
  url: string;
  port: number;
  readonly mode: LinkMode;
  /** Bytes relayed toward clients so far. */
  bytesDown(): number;
  /** Connections accepted so far. */
  connections(): number;
  setMode(mode: LinkMode): Promise<void>;
  close(): Promise<void>;
}

/** Most bytes a direction holds before it stops reading its source (backpressure). */
const MAX_QUEUED = 1 << 20;

/** One direction of the link, shared by all connections: its rate and when it is free next. */
interface Pipe {
  bytesPerSec: number;
  nextFree: number;
}

/**
 * One direction of one connection: each chunk leaves the link's shared pipe
 * no faster than its rate allows and arrives `latencyMs` later. One FIFO and
 * one timer per direction, so order is kept whatever the timers' granularity.
 * While `held()` nothing is delivered (a blackhole); `release()` goes on.
 */
class Direction {
  private readonly queue: Array<{ chunk: Buffer | null; at: number }> = [];
  private queued = 0;
  private timer: NodeJS.Timeout | NodeJS.Immediate | undefined;

  constructor(
    private readonly src: Socket,
    private readonly dst: Socket,
    private readonly latencyMs: number,
    private readonly pipe: Pipe,
    private readonly held: () => boolean,
    private readonly onBytes: (n: number) => void,
  ) {
    src.on('data', (chunk: Buffer) => {
      this.queued += chunk.length;
      if (this.queued > MAX_QUEUED) src.pause();
      this.enqueue(chunk);
    });
    src.on('end', () => this.enqueue(null));
    dst.on('close', () => {
      this.cancel();
      this.queue.length = 0;
    });
  }

  release(): void {
    this.cancel();
    this.schedule();
  }

  private enqueue(chunk: Buffer | null): void {
    const n = chunk?.length ?? 0;
    // The pipe is shared by every connection in this direction; latency is per chunk.
    const start = Math.max(performance.now(), this.pipe.nextFree);
    this.pipe.nextFree = start + (this.pipe.bytesPerSec > 0 ? (n * 1000) / this.pipe.bytesPerSec : 0);
    this.queue.push({ chunk, at: Math.max(this.pipe.nextFree + this.latencyMs, this.queue.at(-1)?.at ?? 0) });
    if (!this.timer) this.schedule();
  }

  private schedule(): void {
    if (this.queue.length === 0 || this.held()) return;
    const wait = this.queue[0]!.at - performance.now();
    // Sub-millisecond latencies (Gigabit) would round up to a whole timer tick.
    this.timer = wait < 1 ? setImmediate(() => this.flush()) : setTimeout(() => this.flush(), wait);
  }

  private cancel(): void {
    if (this.timer) {
      clearTimeout(this.timer as NodeJS.Timeout);
      clearImmediate(this.timer as NodeJS.Immediate);
    }
    this.timer = undefined;
  }

  private flush(): void {
    this.timer = undefined;
    if (this.held()) return;
    const now = performance.now();
    while (this.queue.length > 0 && this.queue[0]!.at <= now) {
      const { chunk } = this.queue.shift()!;
      if (chunk === null) {
        this.dst.end();
        continue;
      }
      this.queued -= chunk.length;
      if (!this.dst.destroyed) {
        this.dst.write(chunk);
        this.onBytes(chunk.length);
      }
    }
    if (this.queued <= MAX_QUEUED && this.src.isPaused()) this.src.resume();
    this.schedule();
  }
}

/** One relayed connection: the client's socket, the target's (made when the link is up), both directions. */
class Relayed {
  private target: Socket | undefined;
  private readonly early: Buffer[] = [];
  private readonly directions: Direction[] = [];

  constructor(
    readonly client: Socket,
    private readonly link: { options: LinkOptions; down: Pipe; up: Pipe; held: () => boolean; onBytes: (n: number) => void },
  ) {
    client.on('error', () => this.destroy());
    client.on('close', () => this.target?.destroy());
    // Until the target is connected (a new connection while blackholed), the client's bytes wait here.
    client.on('data', this.hold);
    if (!link.held()) this.connect();
  }

  private readonly hold = (chunk: Buffer) => void this.early.push(chunk);

  /** The link is up (again): connect a connection that came in while blackholed, release held bytes. */
  resume(): void {
    if (!this.target) this.connect();
    for (const d of this.directions) d.release();
  }

  private connect(): void {
    const { options, down, up, held, onBytes } = this.link;
    const target = createConnection(options.target);
    this.target = target;
    target.on('error', () => this.destroy());
    target.on('close', () => setTimeout(() => this.client.destroy(), options.latencyMs + 10_000).unref());
    this.client.off('data', this.hold);
    this.directions.push(new Direction(this.client, target, options.latencyMs, up, held, () => {}));
    this.directions.push(new Direction(target, this.client, options.latencyMs, down, held, onBytes));
    for (const chunk of this.early.splice(0)) this.client.emit('data', chunk);
  }

  /** The Pi went away: the client gets a FIN (nginx's process is gone), the target connection is dropped. */
  finish(): void {
    this.target?.destroy();
    this.client.end();
    setTimeout(() => this.client.destroy(), 1000).unref();
  }

  destroy(): void {
    this.client.destroy();
    this.target?.destroy();
  }
}

export async function startLink(options: LinkOptions): Promise<Link> {
  const open = new Set<Relayed>();
  let mode: LinkMode = 'up';
  let down = 0;
  let accepted = 0;
  const link = {
    options,
    down: { bytesPerSec: options.downBytesPerSec, nextFree: 0 },
    up: { bytesPerSec: options.upBytesPerSec ?? 0, nextFree: 0 },
    held: () => mode !== 'up',
    onBytes: (n: number) => void (down += n),
  };
  const server: Server = createServer((client) => {
    accepted++;
    const r = new Relayed(client, link);
    open.add(r);
    client.on('close', () => open.delete(r));
  });
  const listen = (port: number) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
  await listen(options.port ?? 0);
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}/`,
    port,
    get mode() {
      return mode;
    },
    bytesDown: () => down,
    connections: () => accepted,
    async setMode(next) {
      if (next === mode) return;
      const was = mode;
      mode = next;
      if (next === 'refused') {
        for (const r of open) r.finish();
        await new Promise((resolve) => server.close(resolve));
        return;
      }
      if (was === 'refused') await listen(port);
      if (next === 'up') for (const r of open) r.resume();
    },
    async close() {
      mode = 'refused';
      for (const r of open) r.destroy();
      if (server.listening) await new Promise((resolve) => server.close(resolve));
    },
  };
}
