import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { startLink, type Link } from '../helpers/link.js';

/** The link every test and benchmark puts in front of a Pi or an upstream (test/helpers/link.ts). */
describe('the relay that plays a home link, and a Pi that comes and goes', () => {
  let server: Server | undefined;
  let link: Link | undefined;
  afterEach(async () => {
    await link?.close();
    if (server) await new Promise((r) => server!.close(r));
    server = link = undefined;
  });

  async function serve(body: Buffer): Promise<number> {
    server = createServer((_req, res) => res.end(body));
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    return (server.address() as { port: number }).port;
  }

  it('delivers every byte in order, no faster than its rate, after its latency', async () => {
    const body = randomBytes(3 * 2 ** 20);
    link = await startLink({ target: { host: '127.0.0.1', port: await serve(body) }, latencyMs: 100, downBytesPerSec: 6 * 2 ** 20 });
    const started = performance.now();
    const got = Buffer.from(await (await fetch(link.url)).arrayBuffer());
    const ms = performance.now() - started;
    expect(got.equals(body)).toBe(true);
    // 3 MiB at 6 MiB/s is 500 ms, plus a round trip of 200 ms; only a lower bound holds on a loaded machine.
    expect(ms).toBeGreaterThanOrEqual(650);
    expect(link.bytesDown()).toBeGreaterThanOrEqual(body.length);
  });

  it('the rate is shared by all connections: two downloads at once take as long as both in a row', async () => {
    const body = randomBytes(2 ** 20);
    link = await startLink({ target: { host: '127.0.0.1', port: await serve(body) }, latencyMs: 1, downBytesPerSec: 4 * 2 ** 20 });
    const started = performance.now();
    const both = await Promise.all([0, 1].map(async () => Buffer.from(await (await fetch(link!.url)).arrayBuffer())));
    expect(both.every((b) => b.equals(body))).toBe(true);
    // 2 MiB over one 4 MiB/s wire: at least 500 ms, however many connections.
    expect(performance.now() - started).toBeGreaterThanOrEqual(480);
  });

  it('blackholed: a request is accepted and never answered; back up, it is answered', async () => {
    const body = Buffer.from('hello');
    link = await startLink({ target: { host: '127.0.0.1', port: await serve(body) }, latencyMs: 0, downBytesPerSec: 0 });
    await link.setMode('blackhole');
    let answered = false;
    const asking = fetch(link.url).then(async (r) => {
      answered = true;
      return Buffer.from(await r.arrayBuffer());
    });
    // The connection is accepted (the client waits on an answer, not on a refusal).
    await new Promise<void>((resolve, reject) => {
      const s = connect(link!.port, '127.0.0.1', () => {
        s.destroy();
        resolve();
      });
      s.on('error', reject);
    });
    expect(answered).toBe(false);
    await link.setMode('up');
    expect((await asking).equals(body)).toBe(true);
  });

  it('refused: open connections get a FIN, new ones are refused; back up on the same port', async () => {
    const body = Buffer.from('hello');
    link = await startLink({ target: { host: '127.0.0.1', port: await serve(body) }, latencyMs: 0, downBytesPerSec: 0 });
    const open = connect(link.port, '127.0.0.1');
    await once(open, 'connect');
    const ended = once(open, 'end');
    await link.setMode('refused');
    await ended;
    open.destroy();
    await expect(fetch(link.url)).rejects.toThrow();
    await link.setMode('up');
    expect(Buffer.from(await (await fetch(link.url)).arrayBuffer()).equals(body)).toBe(true);
  });
});
