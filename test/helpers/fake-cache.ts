import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/**
 * A binary cache written to misbehave, on 127.0.0.1: each file is served by
 * a behaviour (whole, cut, stalled, dripped, HTML, an HTTP error...). It
 * counts requests and the ones still open, so a test can check that the
 * proxy left nothing hanging.
 */
export type Behaviour = (req: IncomingMessage, res: ServerResponse, body: Buffer) => void | Promise<void>;

export const behave = {
  /** The whole file, honouring a `Range` as nginx does. */
  ok: (): Behaviour => (req, res, body) => {
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (m) {
      const start = Number(m[1]);
      const end = m[2] ? Math.min(Number(m[2]), body.length - 1) : body.length - 1;
      if (start >= body.length) {
        res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
        return;
      }
      res.writeHead(206, { 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${body.length}`, 'accept-ranges': 'bytes' });
      res.end(body.subarray(start, end + 1));
      return;
    }
    res.writeHead(200, { 'content-length': body.length, 'accept-ranges': 'bytes' });
    res.end(req.method === 'HEAD' ? undefined : body);
  },
  /** The whole file with 200, whatever the Range said. */
  ignoreRange: (): Behaviour => (req, res, body) => {
    res.writeHead(200, { 'content-length': body.length });
    res.end(req.method === 'HEAD' ? undefined : body);
  },
  status: (code: number, text = ''): Behaviour => (_req, res) => {
    res.writeHead(code, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text) }).end(text);
  },
  /** A captive portal: 200 text/html for every URL. */
  html: (): Behaviour => (_req, res) => {
    const page = '<!doctype html><html><body>Please log in to the hotel Wi-Fi</body></html>\n'.repeat(20);
    res.writeHead(200, { 'content-type': 'text/html', 'content-length': Buffer.byteLength(page) }).end(page);
  },
  redirect: (location: string): Behaviour => (_req, res) => {
    res.writeHead(302, { location, 'content-length': 0 }).end();
  },
  /** `first` for the first request, `then` for every one after it (a Pi that breaks off once). */
  firstThen: (first: Behaviour, then: Behaviour): Behaviour => {
    let served = 0;
    return (req, res, body) => (served++ === 0 ? first : then)(req, res, body);
  },
  /** Announces the whole length, sends `after` bytes, then resets the connection. */
  resetAfter: (after: number): Behaviour => (_req, res, body) => {
    res.writeHead(200, { 'content-length': body.length });
    res.write(body.subarray(0, after), () => setTimeout(() => res.socket?.destroy(), 20));
  },
  /** Announces the whole length, sends `after` bytes, then says nothing more (the socket stays open). */
  stallAfter: (after: number): Behaviour => (_req, res, body) => {
    res.writeHead(200, { 'content-length': body.length });
    res.write(body.subarray(0, after));
  },
  /** Sends `chunk` bytes every `everyMs`, forever slower than any build should wait. */
  drip: (chunk: number, everyMs: number, first = 0): Behaviour => (_req, res, body) => {
    res.writeHead(200, { 'content-length': body.length });
    let at = first;
    res.write(body.subarray(0, first));
    const timer = setInterval(() => {
      if (res.destroyed || at >= body.length) return clearInterval(timer);
      res.write(body.subarray(at, at + chunk));
      at += chunk;
      if (at >= body.length) res.end();
    }, everyMs);
    res.on('close', () => clearInterval(timer));
  },
  /** Headers, then nothing at all. */
  silent: (): Behaviour => () => {},
};

export interface FakeCache {
  url: string;
  /** path → behaviour and body; change at will between requests. */
  files: Map<string, { body: Buffer; behaviour: Behaviour }>;
  /** Behaviour for paths not in `files` (default 404). */
  fallback: Behaviour | undefined;
  requests: Array<{ method: string; url: string; range: string | undefined }>;
  /** Responses not finished or closed yet. */
  open(): number;
  close(): Promise<void>;
}

export async function startFakeCache(): Promise<FakeCache> {
  const sockets = new Set<Socket>();
  let open = 0;
  const cache: FakeCache = {
    url: '',
    files: new Map(),
    fallback: undefined,
    requests: [],
    open: () => open,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
  const server: Server = createServer((req, res) => {
    open++;
    res.once('close', () => open--);
    const path = (req.url ?? '/').slice(1);
    cache.requests.push({ method: req.method ?? 'GET', url: path, range: req.headers.range });
    if (path === 'nix-cache-info' && !cache.files.has(path)) {
      res.writeHead(200, { 'content-type': 'text/x-nix-cache-info' }).end('StoreDir: /nix/store\n');
      return;
    }
    const file = cache.files.get(path);
    const behaviour = file?.behaviour ?? cache.fallback ?? behave.status(404);
    void Promise.resolve(behaviour(req, res, file?.body ?? Buffer.alloc(0))).catch(() => res.destroy());
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  cache.url = `http://127.0.0.1:${port}/`;
  return cache;
}
