import { createConnection, createServer, type Socket } from 'node:net';
import { listenOnLoopback } from '../helpers/ports.js';

export interface SlowRelayOptions {
  /** The server on 127.0.0.1 the relay forwards to. */
  targetPort: number;
  /** One-way delay added to every byte, each way (a round trip costs 2 × delayMs, also the TCP handshake). */
  delayMs: number;
  /** Bandwidth of each direction, shared by all connections (a link, not a per-connection cap). */
  bytesPerSecond: number;
}

/** Bytes a socket may have queued in the relay before it is paused (backpressure). */
const MAX_QUEUED = 256 * 1024;
/** Chunks are paced in pieces of at most this size, so one big chunk does not hog the link. */
const PIECE = 16 * 1024;

/** One direction of the link: bytes leave it one after the other at `bytesPerSecond`, then fly `delayMs`. */
class Link {
  private busyUntil = 0;
  constructor(
    private readonly bytesPerSecond: number,
    private readonly delayMs: number,
  ) {}

  /** When a piece of `n` bytes handed to the link now arrives at the other end (performance.now() ms). */
  arrival(n: number): number {
    const now = performance.now();
    const start = Math.max(now, this.busyUntil);
    this.busyUntil = start + (n / this.bytesPerSecond) * 1000;
    return this.busyUntil + this.delayMs;
  }
}

/** Carries `from`'s bytes to `to` over `link`, in order, none before `readyAt`, pausing `from` while too much is on the way. */
function carry(from: Socket, to: Socket, link: Link, readyAt: number): void {
  let queued = 0;
  let last = Promise.resolve();
  from.on('data', (chunk: Buffer) => {
    for (let i = 0; i < chunk.length; i += PIECE) {
      const piece = chunk.subarray(i, i + PIECE);
      const at = Math.max(link.arrival(piece.length), readyAt);
      queued += piece.length;
      if (queued > MAX_QUEUED) from.pause();
      // Deliveries are chained so they stay in order even if two timers fire in the same tick.
      last = last
        .then(() => new Promise<void>((r) => setTimeout(r, Math.max(0, at - performance.now()))))
        .then(() => {
          queued -= piece.length;
          if (!to.destroyed) to.write(piece);
          if (queued <= MAX_QUEUED / 2 && from.isPaused()) from.resume();
        });
    }
  });
  from.on('end', () => {
    last = last.then(() => {
      if (!to.destroyed) to.end();
    });
  });
}

/**
 * A slow link on loopback (this kernel has no netem): a TCP relay that
 * delays every byte by `delayMs` each way and limits each direction to
 * `bytesPerSecond`, shared by all connections. A new connection pays one
 * round trip before its first byte goes through, as a TCP handshake would.
 */
export async function startSlowRelay(options: SlowRelayOptions): Promise<{ port: number; url: string; close(): Promise<void> }> {
  const up = new Link(options.bytesPerSecond, options.delayMs);
  const down = new Link(options.bytesPerSecond, options.delayMs);
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const target = createConnection({ host: '127.0.0.1', port: options.targetPort });
    for (const s of [client, target]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        target.destroy();
      });
    }
    client.on('close', () => target.destroy());
    target.on('close', () => client.destroy());
    // The first request byte can leave after the handshake's round trip and arrives one delay later.
    carry(client, target, up, performance.now() + 3 * options.delayMs);
    carry(target, client, down, 0);
  });
  return listenOnLoopback(server, sockets);
}
