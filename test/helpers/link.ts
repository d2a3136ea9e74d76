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
 *   nginx dies mid-response;
 * - `slow`: bytes flow, late and slowly (SLOW: 300 ms more each way, so a
 *   response head comes past the proxy's 200 ms deadlines but within its
 *   800 ms first-byte timeout, and 32 kB/s shared): a Pi at the far edge of
 *   the Wi-Fi, or one that is swapping;
 * - `drip`: each connection's bytes trickle, a few at a time (DRIP: 64
 *   bytes every 100 ms each way), never silent long enough for an idle
 *   timeout: a dying SD card, a link about to drop.
 *
 * Whatever the mode was, bytes it still holds go on at the link's own
 * latency and rate from the moment it is `up` again (TCP's retransmits once
 * the air is clear), in order.
 */
export type LinkMode = 'up' | 'blackhole' | 'refused' | 'slow' | 'drip';

/** The `slow` mode: added to the link's latency each way, and the rate it is held to (bytes per second, shared). */
export const SLOW = { extraLatencyMs: 300, bytesPerSec: 32_000 };
/** The `drip` mode: each connection's bytes, each way, in pieces of `bytes` every `everyMs`. */
export const DRIP = { bytes: 64, everyMs: 100 };

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

/** How the link treats bytes in the mode it is in: latency each way, the pipe's rate (0: unlimited), and the pieces of a drip. */
interface Shape {
  latencyMs: number;
  bytesPerSec: number;
  piece: number;
  gapMs: number;
}

function shapeOf(mode: LinkMode, latencyMs: number, bytesPerSec: number): Shape {
  if (mode === 'slow') return { latencyMs: latencyMs + SLOW.extraLatencyMs, bytesPerSec: bytesPerSec > 0 ? Math.min(bytesPerSec, SLOW.bytesPerSec) : SLOW.bytesPerSec, piece: Infinity, gapMs: 0 };
  if (mode === 'drip') return { latencyMs, bytesPerSec, piece: DRIP.bytes, gapMs: DRIP.everyMs };
  return { latencyMs, bytesPerSec, piece: Infinity, gapMs: 0 };
}

/** Bytes that go on the wire at once (an aggregate of Wi-Fi frames): what another connection waits behind. */
const WIRE_PIECE = 16 * 1024;

type Timer = NodeJS.Timeout | NodeJS.Immediate;

/** Sub-millisecond waits (Gigabit) would round up to a whole timer tick. */
function after(ms: number, fn: () => void): Timer {
  return ms < 1 ? setImmediate(fn) : setTimeout(fn, ms);
}

function clear(timer: Timer | undefined): void {
  clearTimeout(timer as NodeJS.Timeout);
  clearImmediate(timer as NodeJS.Immediate);
}

/**
 * One direction of one connection, in two stages as on a real link. On the
 * wire: one piece at a time, each taking the link's shared pipe for as long
 * as its rate says, so connections take turns a piece each (a new
 * connection's first bytes wait behind one piece per busy connection, not
 * behind all their bytes). In flight: each piece arrives `latencyMs` after it
 * left the wire, in order. A receiver that stops reading (its socket's
 * buffer full) stops its connection's next pieces from going on the wire,
 * as TCP's window does, and its source stops being read once a megabyte
 * waits. While `held()` nothing moves (a blackhole). When the mode changes,
 * `retime()` sends what is in flight or waiting anew, from now.
 */
class Direction {
  /** Read from the source, not on the wire yet. */
  private waiting: Array<Buffer | null> = [];
  /** Off the wire, arriving at `at`, in order. */
  private flying: Array<{ chunk: Buffer | null; at: number }> = [];
  /** Bytes waiting or in flight (the source is paused above MAX_QUEUED). */
  private queued = 0;
  /** When the last piece sent arrives: the next never arrives before it (plus a drip's gap). */
  private lastAt = -Infinity;
  /** A piece is on the wire; the next goes when it is off. */
  private sending: Timer | undefined;
  private delivering: Timer | undefined;
  /** The receiver asked to wait (its socket's buffer is full) until 'drain'. */
  private full = false;

  constructor(
    private readonly src: Socket,
    private readonly dst: Socket,
    private readonly pipe: Pipe,
    private readonly shape: (pipeBytesPerSec: number) => Shape,
    private readonly held: () => boolean,
    private readonly onBytes: (n: number) => void,
  ) {
    src.on('data', (chunk: Buffer) => {
      this.queued += chunk.length;
      if (this.queued > MAX_QUEUED) src.pause();
      this.waiting.push(chunk);
      this.send();
    });
    src.on('end', () => {
      this.waiting.push(null);
      this.send();
    });
    dst.on('drain', () => {
      this.full = false;
      this.send();
    });
    dst.on('close', () => {
      this.cancel();
      this.waiting = [];
      this.flying = [];
    });
  }

  /** The mode changed: what is in flight or waiting goes on as the link now is, from now. */
  retime(): void {
    this.cancel();
    this.waiting = [...this.flying.map((f) => f.chunk), ...this.waiting];
    this.flying = [];
    this.lastAt = -Infinity;
    this.send();
    this.deliver();
  }

  /** Puts the next piece on the wire, if the link, the receiver and the wire let it. */
  private send(): void {
    if (this.sending || this.full || this.held() || this.waiting.length === 0) return;
    const shape = this.shape(this.pipe.bytesPerSec);
    const size = Math.min(shape.piece, WIRE_PIECE);
    let chunk = this.waiting[0]!;
    if (chunk !== null && chunk.length > size) {
      this.waiting[0] = chunk.subarray(size);
      chunk = chunk.subarray(0, size);
    } else this.waiting.shift();
    const now = performance.now();
    const start = Math.max(now, this.pipe.nextFree);
    const off = start + (shape.bytesPerSec > 0 ? ((chunk?.length ?? 0) * 1000) / shape.bytesPerSec : 0);
    this.pipe.nextFree = off;
    this.lastAt = Math.max(off + shape.latencyMs, this.lastAt + shape.gapMs);
    this.flying.push({ chunk, at: this.lastAt });
    if (!this.delivering) this.deliver();
    this.sending = after(off - now, () => {
      this.sending = undefined;
      this.send();
    });
  }

  /** Hands the receiver every piece that has arrived, in order; waits for the next. */
  private deliver(): void {
    this.delivering = undefined;
    if (this.held()) return;
    const now = performance.now();
    while (this.flying.length > 0 && this.flying[0]!.at <= now) {
      const { chunk } = this.flying.shift()!;
      if (chunk === null) {
        this.dst.end();
        continue;
      }
      this.queued -= chunk.length;
      if (!this.dst.destroyed) {
        if (!this.dst.write(chunk)) this.full = true;
        this.onBytes(chunk.length);
      }
    }
    if (this.queued <= MAX_QUEUED && this.src.isPaused()) this.src.resume();
    if (this.flying.length > 0) this.delivering = after(this.flying[0]!.at - now, () => this.deliver());
  }

  private cancel(): void {
    clear(this.sending);
    clear(this.delivering);
    this.sending = this.delivering = undefined;
  }
}

interface LinkState {
  options: LinkOptions;
  down: Pipe;
  up: Pipe;
  shape: (pipeBytesPerSec: number) => Shape;
  held: () => boolean;
  onBytes: (n: number) => void;
}

/** One relayed connection: the client's socket, the target's (made when the link is up), both directions. */
class Relayed {
  private target: Socket | undefined;
  private readonly early: Buffer[] = [];
  private readonly directions: Direction[] = [];

  constructor(
    readonly client: Socket,
    private readonly link: LinkState,
  ) {
    client.on('error', () => this.destroy());
    client.on('close', () => this.target?.destroy());
    // Until the target is connected (a new connection while blackholed), the client's bytes wait here.
    client.on('data', this.hold);
    if (!link.held()) this.connect();
  }

  private readonly hold = (chunk: Buffer) => void this.early.push(chunk);

  /** The link changed mode (and is not blackholed): connect a connection that came in while it was, time held bytes anew. */
  resume(): void {
    if (!this.target) this.connect();
    for (const d of this.directions) d.retime();
  }

  private connect(): void {
    const { options, down, up, shape, held, onBytes } = this.link;
    const target = createConnection(options.target);
    this.target = target;
    target.on('error', () => this.destroy());
    target.on('close', () => setTimeout(() => this.client.destroy(), options.latencyMs + 10_000).unref());
    this.client.off('data', this.hold);
    this.directions.push(new Direction(this.client, target, up, shape, held, () => {}));
    this.directions.push(new Direction(target, this.client, down, shape, held, onBytes));
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
  const link: LinkState = {
    options,
    down: { bytesPerSec: options.downBytesPerSec, nextFree: 0 },
    up: { bytesPerSec: options.upBytesPerSec ?? 0, nextFree: 0 },
    shape: (pipeBytesPerSec) => shapeOf(mode, options.latencyMs, pipeBytesPerSec),
    held: () => mode === 'blackhole' || mode === 'refused',
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
      if (next === 'blackhole') return;
      // What the last mode queued on the shared pipes goes on at this mode's pace, from now.
      link.down.nextFree = link.up.nextFree = 0;
      for (const r of open) r.resume();
    },
    async close() {
      mode = 'refused';
      for (const r of open) r.destroy();
      if (server.listening) await new Promise((resolve) => server.close(resolve));
    },
  };
}
