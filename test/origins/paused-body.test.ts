import { createServer, type Server } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { run } from '../helpers/proc.js';

const CLIENT = fileURLToPath(new URL('./fixtures/unread-body.mjs', import.meta.url));

/**
 * undici 7 (nodejs/undici#5360) asserted `!this.paused` inside the socket's
 * 'end' handler when a response body it had paused under backpressure met the
 * origin's FIN with `Connection: close`: an exception no caller can catch,
 * which killed the proxy. The proxy leaves a body unread in the ordinary
 * course (Nix reading slowly, a decompressor behind), and nginx closes a
 * keep-alive connection after its `keepalive_requests` (1000) with exactly
 * such a response; a flapping Pi closes them at any moment. undici 8
 * completes the paused parser instead (#5474). The client runs as a process
 * of its own (the proxy's HttpOrigin from dist/), so a crash is seen as the
 * proxy would suffer it: the process dies.
 */
describe("an origin's response body left unread when the origin closes its socket", () => {
  let server: Server | undefined;
  afterEach(async () => {
    if (server) await new Promise((r) => server!.close(r));
    server = undefined;
  });

  it.each([
    // 64 KiB is the body stream's high-water mark: the parser pauses exactly at the last byte, and the FIN finds it paused.
    ['its whole body (64 KiB, Connection: close, as nginx ends a connection after keepalive_requests) and a FIN', 'whole'],
    ['part of its body and a FIN (a Pi that went away mid-NAR)', 'cut'],
  ])('the origin sends %s: the process lives, and the body ends or fails as a catchable error', async (_what, kind) => {
    const body = Buffer.alloc(64 * 1024, 0x61);
    server = createServer((sock) => {
      sock.on('error', () => {});
      sock.once('data', () => {
        const length = kind === 'whole' ? body.length : body.length * 4;
        sock.write(`HTTP/1.1 200 OK\r\nContent-Length: ${length}\r\nConnection: close\r\n\r\n`);
        sock.write(body);
        sock.end(); // FIN
      });
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    const res = await run(process.execPath, [CLIENT, `http://127.0.0.1:${(server.address() as { port: number }).port}/`], { timeoutMs: 20_000 });
    expect(res.stderr).not.toMatch(/AssertionError/);
    expect(res.code, res.stderr).toBe(0);
    const report = JSON.parse(res.stdout) as { bytes: number; error?: string };
    if (kind === 'whole') expect(report).toEqual({ bytes: body.length });
    else expect(report.error).toBeDefined();
  });
});
