import { afterEach, describe, expect, it } from 'vitest';
import { TooLarge } from '../../src/origins/collect.js';
import { scriptedOrigin } from '../helpers/origin-server.js';

/**
 * Narinfos and small compressed NARs are read whole through undici's
 * dispatcher (origins/collect.ts, issue 23): the pieces as they arrive, no
 * stream. What a streamed body guaranteed holds for them too: nothing past
 * the limit is kept, a request given up is aborted on the wire, the origin's
 * redirects and statuses count as they do for any fetch.
 */
describe('a body read whole (Origin.fetchBody)', () => {
  const origin = scriptedOrigin();
  afterEach(() => origin.close());
  const serve = (handler: Parameters<typeof origin.serve>[0]) => origin.serve(handler, '/cache/');

  it('the pieces as they came, counted while they arrive; one request, one connection kept for the next', async () => {
    let connections = 0;
    const o = await serve((req, res) => {
      res.writeHead(200, { 'content-length': 3 * 1000 });
      // Three writes a moment apart: three pieces.
      let n = 0;
      const next = () => (n++ < 3 ? res.write(Buffer.alloc(1000, 0x61 + n), () => setTimeout(next, 20)) : res.end());
      next();
    });
    origin.server.on('connection', () => connections++);
    const res = await o.fetchBody('file', { limit: 10_000 });
    expect(res.status).toBe('present');
    if (res.status !== 'present') return;
    const pieces = await res.body.whole;
    expect(Buffer.concat(pieces).toString()).toBe('b'.repeat(1000) + 'c'.repeat(1000) + 'd'.repeat(1000));
    expect(res.body.bytes).toBe(3000);
    await new Promise((r) => setImmediate(r)); // undici hands the connection back on its next turn
    const again = await o.fetchBody('file', { limit: 10_000 });
    if (again.status === 'present') await again.body.whole;
    expect(connections).toBe(1);
  });

  it('each piece is word from the origin: a slow body moves its circuit\'s lastSuccessAt after the head (a busy Pi, not a gone one)', async () => {
    const o = await serve((_req, res) => {
      res.writeHead(200, { 'content-length': 2 * 1000 });
      res.write(Buffer.alloc(1000, 0x61), () => setTimeout(() => res.end(Buffer.alloc(1000, 0x62)), 60));
    });
    const res = await o.fetchBody('slow', { limit: 10_000 });
    if (res.status !== 'present') throw new Error(res.status);
    const atHead = o.breaker.lastSuccessAt;
    await res.body.whole;
    expect(o.breaker.lastSuccessAt).toBeGreaterThanOrEqual(atHead + 50);
  });

  it('longer than its limit: cut off there (TooLarge), nothing past it kept, the connection closed', async () => {
    let closed = false;
    const o = await serve((_req, res) => {
      res.socket!.once('close', () => (closed = true));
      res.writeHead(200, { 'content-length': 1 << 20 });
      res.write(Buffer.alloc(1 << 20, 0x62));
    });
    const res = await o.fetchBody('big', { limit: 4096 });
    if (res.status !== 'present') throw new Error(res.status);
    await expect(res.body.whole).rejects.toBeInstanceOf(TooLarge);
    expect(res.body.bytes).toBeGreaterThan(4096);
    await new Promise((r) => setTimeout(r, 100));
    expect(closed).toBe(true);
  });

  it('given up half-way (the client went away): the request is aborted on the wire, its body rejected, nothing unhandled', async () => {
    let closed = false;
    const o = await serve((_req, res) => {
      res.socket!.once('close', () => (closed = true));
      res.writeHead(200, { 'content-length': 10_000 });
      res.write(Buffer.alloc(100)); // and then nothing
    });
    const abort = new AbortController();
    const res = await o.fetchBody('stall', { limit: 10_000, signal: abort.signal });
    if (res.status !== 'present') throw new Error(res.status);
    abort.abort();
    await expect(res.body.whole).rejects.toThrow();
    await new Promise((r) => setTimeout(r, 100));
    expect(closed).toBe(true);
    res.body.abort(); // again, harmless
  });

  it('an origin that goes quiet mid-body: undici\'s body timeout ends it (the NAR layer calls that slow)', async () => {
    const o = await serve((_req, res) => {
      res.writeHead(200, { 'content-length': 10_000 });
      res.write(Buffer.alloc(100));
    });
    const res = await o.fetchBody('quiet', { limit: 10_000 });
    if (res.status !== 'present') throw new Error(res.status);
    await expect(res.body.whole).rejects.toMatchObject({ code: 'UND_ERR_BODY_TIMEOUT' });
  });

  it('a signal already aborted: nothing is sent', async () => {
    let requests = 0;
    const o = await serve((_req, res) => {
      requests++;
      res.end('x');
    });
    const res = await o.fetchBody('file', { limit: 10, signal: AbortSignal.abort() });
    expect(res).toMatchObject({ status: 'unknown', cause: 'aborted' });
    expect(requests).toBe(0);
  });

  it('redirects under the base path are followed, others refused; 404 is absent, 5xx unknown: as for a streamed fetch', async () => {
    const o = await serve((req, res) => {
      if (req.url === '/cache/moved') res.writeHead(302, { location: '/cache/here', 'content-length': 0 }).end();
      else if (req.url === '/cache/away') res.writeHead(302, { location: 'http://127.0.0.2/x', 'content-length': 0 }).end();
      else if (req.url === '/cache/here') res.end('here');
      else if (req.url === '/cache/broken') res.writeHead(503, { 'content-length': 4 }).end('down');
      else res.writeHead(404, { 'content-length': 0 }).end();
    });
    const moved = await o.fetchBody('moved', { limit: 100 });
    expect(moved.status).toBe('present');
    if (moved.status === 'present') expect(Buffer.concat(await moved.body.whole).toString()).toBe('here');
    expect(await o.fetchBody('away', { limit: 100 })).toEqual({ status: 'absent', statusCode: 302 });
    expect(await o.fetchBody('nothing', { limit: 100 })).toEqual({ status: 'absent', statusCode: 404 });
    expect(await o.fetchBody('../../etc/passwd', { limit: 100 })).toEqual({ status: 'absent', statusCode: 400 });
    // A LAN cache's first 5xx opens its circuit (maxFails 1): the next fetch is not sent.
    expect(await o.fetchBody('broken', { limit: 100 })).toMatchObject({ status: 'unknown', cause: 'server-error' });
    expect(await o.fetchBody('here', { limit: 100 })).toMatchObject({ status: 'unknown', cause: 'circuit-open' });
  });
});
