import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { DRIP, SLOW, startLink, type Link } from '../helpers/link.js';
import { until } from '../helpers/wait.js';

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

  it("connections take turns on the wire: a new one's answer waits behind a piece of each busy one, not behind all their bytes", async () => {
    const big = randomBytes(3 * 2 ** 20);
    const small = Buffer.from('hello');
    server = createServer((req, res) => res.end(req.url === '/big' ? big : small));
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    // 3 MiB takes the wire for 1.5 s at 2 MiB/s; a megabyte of it is read from the server and waiting at any time.
    link = await startLink({ target: { host: '127.0.0.1', port: (server.address() as { port: number }).port }, latencyMs: 1, downBytesPerSec: 2 * 2 ** 20 });
    const downloading = fetch(`${link.url}big`).then(async (r) => Buffer.from(await r.arrayBuffer()));
    await until('the big download under way', 2000, () => link!.bytesDown() > 256 * 1024 || undefined);
    const started = performance.now();
    expect(Buffer.from(await (await fetch(`${link.url}small`)).arrayBuffer()).equals(small)).toBe(true);
    // Behind a megabyte it would take 500 ms; behind a 16 KiB piece, 8 ms (and a new connection's round trip).
    expect(performance.now() - started).toBeLessThan(250);
    expect((await downloading).equals(big)).toBe(true);
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

  /** A raw GET through the link: every piece as it came (socket reads), and when. */
  async function pieces(port: number): Promise<{ bytes: Buffer; reads: Array<{ n: number; at: number }>; ms: number }> {
    const started = performance.now();
    const s = connect(port, '127.0.0.1');
    await once(s, 'connect');
    s.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    const reads: Array<{ n: number; at: number }> = [];
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => {
      chunks.push(c);
      reads.push({ n: c.length, at: performance.now() - started });
    });
    await once(s, 'close');
    return { bytes: Buffer.concat(chunks), reads, ms: performance.now() - started };
  }

  it('slow: the answer comes late (the added latency each way) and at the slow rate; back up, the rest comes at once', async () => {
    const small = Buffer.from('hello');
    link = await startLink({ target: { host: '127.0.0.1', port: await serve(small) }, latencyMs: 1, downBytesPerSec: 0 });
    await link.setMode('slow');
    const started = performance.now();
    expect(Buffer.from(await (await fetch(link.url)).arrayBuffer()).equals(small)).toBe(true);
    expect(performance.now() - started).toBeGreaterThanOrEqual(2 * SLOW.extraLatencyMs);
    await link.close();
    await new Promise((r) => server!.close(r));

    // 320 kB would take 10 s at the slow rate; half a second into it the link is back, and it all comes well before.
    const big = randomBytes(10 * SLOW.bytesPerSec);
    link = await startLink({ target: { host: '127.0.0.1', port: await serve(big) }, latencyMs: 1, downBytesPerSec: 0 });
    await link.setMode('slow');
    const t0 = performance.now();
    const asking = fetch(link.url).then(async (r) => Buffer.from(await r.arrayBuffer()));
    await new Promise((r) => setTimeout(r, 500));
    expect(link.bytesDown()).toBeLessThan(big.length / 2);
    await link.setMode('up');
    expect((await asking).equals(big)).toBe(true);
    expect(performance.now() - t0).toBeLessThan(3000);
  });

  it(`drip: each connection's bytes come ${DRIP.bytes} at a time, ${DRIP.everyMs} ms apart, in order; back up, the rest comes at once`, async () => {
    const body = randomBytes(10 * DRIP.bytes);
    link = await startLink({ target: { host: '127.0.0.1', port: await serve(body) }, latencyMs: 0, downBytesPerSec: 0 });
    await link.setMode('drip');
    const got = await pieces(link.port);
    expect(got.bytes.subarray(got.bytes.length - body.length).equals(body)).toBe(true);
    expect(Math.max(...got.reads.map((r) => r.n))).toBeLessThanOrEqual(DRIP.bytes);
    // The response (head and body) is at least 11 pieces: 10 gaps of 100 ms.
    expect(got.ms).toBeGreaterThanOrEqual(Math.floor(got.bytes.length / DRIP.bytes) * DRIP.everyMs - 20);

    await link.close();
    await new Promise((r) => server!.close(r));
    const big = randomBytes(256 * 1024);
    link = await startLink({ target: { host: '127.0.0.1', port: await serve(big) }, latencyMs: 0, downBytesPerSec: 0 });
    await link.setMode('drip');
    const t0 = performance.now();
    const asking = fetch(link.url).then(async (r) => Buffer.from(await r.arrayBuffer()));
    await new Promise((r) => setTimeout(r, 500));
    expect(link.bytesDown()).toBeLessThan(1024);
    await link.setMode('up');
    expect((await asking).equals(big)).toBe(true);
    expect(performance.now() - t0).toBeLessThan(3000);
  });
});
