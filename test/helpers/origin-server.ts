import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import pino from 'pino';
import { HttpOrigin } from '../../src/origins/http-origin.js';
import { DEFAULT_TIMEOUTS, type OriginTimeouts } from '../../src/origins/timeouts.js';
import { TrustedKeys } from '../../src/protocol/signing.js';

/**
 * An HTTP server on 127.0.0.1 that plays an origin however a test scripts
 * it, and the proxy's HttpOrigin on it (a LAN cache; its body-idle timeout
 * 500 ms unless given). `close()` ends both and every connection; `serve()`
 * again starts a new pair.
 */
export function scriptedOrigin(timeouts: OriginTimeouts = { ...DEFAULT_TIMEOUTS.lan, bodyIdleMs: 500 }) {
  let server: Server | undefined;
  let origin: HttpOrigin | undefined;
  const sockets = new Set<Socket>();
  return {
    get server(): Server {
      return server!;
    },
    async serve(handler: (req: IncomingMessage, res: ServerResponse) => void, basePath = '/'): Promise<HttpOrigin> {
      server = createServer(handler);
      server.on('connection', (s) => {
        sockets.add(s);
        s.on('close', () => sockets.delete(s));
      });
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      const port = (server.address() as { port: number }).port;
      origin = new HttpOrigin({ url: `http://127.0.0.1:${port}${basePath}`, kind: 'lan', timeouts, trusted: TrustedKeys.parse([]), log: pino({ level: 'silent' }) });
      return origin;
    },
    async close(): Promise<void> {
      await origin?.close();
      for (const s of sockets) s.destroy();
      sockets.clear();
      const s = server;
      if (s) await new Promise((r) => s.close(r));
      server = origin = undefined;
    },
  };
}
