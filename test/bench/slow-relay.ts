import { createConnection, createServer, type Server, type Socket } from 'node:net';

export interface SlowLinkOptions {
  /** Where the relay forwards to. */
  target: { host: string; port: number };
  /** Added to every chunk, each way (half the round trip). */
  latencyMs: number;
  /** Bytes per second toward the clients (the download direction), shared by all connections; 0: unlimited. */
  downBytesPerSec: number;
  /** Bytes per second toward the target; 0: unlimited. */
  upBytesPerSec?: number;
}

export interface SlowLink {
  url: string;
  port: number;
  /** Bytes relayed toward clients so far. */
  bytesDown(): number;
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
 */
function pace(src: Socket, dst: Socket, latencyMs: number, pipe: Pipe, onBytes: (n: number) => void): void {
  const queue: Array<{ chunk: Buffer | null; at: number }> = [];
  let queued = 0;
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    timer = undefined;
    while (queue.length > 0 && queue[0]!.at <= Date.now()) {
      const { chunk } = queue.shift()!;
      if (chunk === null) {
        dst.end();
        continue;
      }
      queued -= chunk.length;
      if (!dst.destroyed) {
        dst.write(chunk);
        onBytes(chunk.length);
      }
    }
    if (queued <= MAX_QUEUED && src.isPaused()) src.resume();
    if (queue.length > 0) timer = setTimeout(flush, Math.max(1, queue[0]!.at - Date.now()));
  };
  const enqueue = (chunk: Buffer | null) => {
    const n = chunk?.length ?? 0;
    // The pipe is shared by every connection in this direction; latency is per chunk.
    const start = Math.max(Date.now(), pipe.nextFree);
    pipe.nextFree = start + (pipe.bytesPerSec > 0 ? (n * 1000) / pipe.bytesPerSec : 0);
    queue.push({ chunk, at: Math.max(pipe.nextFree + latencyMs, queue.at(-1)?.at ?? 0) });
    if (!timer) timer = setTimeout(flush, Math.max(1, queue[0]!.at - Date.now()));
  };
  src.on('data', (chunk: Buffer) => {
    queued += chunk.length;
    if (queued > MAX_QUEUED) src.pause();
    enqueue(chunk);
  });
  src.on('end', () => enqueue(null));
  dst.on('close', () => {
    if (timer) clearTimeout(timer);
    queue.length = 0;
  });
}

/**
 * A slow link on loopback (this kernel has no netem): a TCP relay that adds
 * latency and limits the rate, for benchmarks of "upstream behind a slow
 * internet connection". Used by `npm run bench` case 7.
 */
export async function startSlowLink(o: SlowLinkOptions): Promise<SlowLink> {
  const sockets = new Set<Socket>();
  let down = 0;
  const downPipe: Pipe = { bytesPerSec: o.downBytesPerSec, nextFree: 0 };
  const upPipe: Pipe = { bytesPerSec: o.upBytesPerSec ?? 0, nextFree: 0 };
  const server: Server = createServer((client) => {
    const upstream = createConnection(o.target);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => setTimeout(() => client.destroy(), o.latencyMs + 10_000).unref());
    pace(client, upstream, o.latencyMs, upPipe, () => {});
    pace(upstream, client, o.latencyMs, downPipe, (n) => (down += n));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}/`,
    port,
    bytesDown: () => down,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
