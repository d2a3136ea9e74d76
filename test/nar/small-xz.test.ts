import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { openNar, SourceError, type OpenedNar } from '../../src/nar/nar-source.js';
import { XzPool } from '../../src/nar/xz-pool.js';
import type { HttpOrigin } from '../../src/origins/http-origin.js';
import { scriptedOrigin } from '../helpers/origin-server.js';

const xz = (data: Buffer) => execFileSync('xz', ['-c', '-6'], { input: data });
const NAR = Buffer.from(randomBytes(30_000).toString('base64'));
const FILE = xz(NAR);

async function chunksOf(nar: OpenedNar): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const c of nar.chunks) out.push(c);
  return out;
}

/**
 * A small xz NAR (most paths of a closure; FileSize ≤ 256 KiB) is read whole
 * from the origin and decoded in one go by the xz pool (issue 23): no stream
 * between the origin's body and the decoder, the pieces handed over as they
 * came. What the origin does wrong is still told apart, as the NAR layer
 * needs it (content: quarantine; transport and slow: fail over).
 */
describe('a small xz NAR, read whole and decoded in one go', () => {
  const origin = scriptedOrigin();
  afterEach(async () => {
    vi.restoreAllMocks();
    await origin.close();
  });
  const serve = (handler: Parameters<typeof origin.serve>[0]) => origin.serve(handler);

  /** The file in three writes a moment apart (three pieces at the proxy). */
  const inPieces = (file: Buffer, length = file.length) => (_req: IncomingMessage, res: ServerResponse) => {
    res.writeHead(200, { 'content-length': length });
    const third = Math.ceil(file.length / 3);
    let n = 0;
    const next = () => (n < 3 ? res.write(file.subarray(third * n, third * ++n), () => setTimeout(next, 20)) : res.end());
    next();
  };

  const open = (o: HttpOrigin, fileSize = FILE.length) => openNar(o, { url: 'nar/x.nar.xz', compression: 'xz', fileSize, narSize: NAR.length }, new AbortController().signal);

  it('the pieces go to the xz pool as they came (not joined first), and the NAR comes out as one Buffer', async () => {
    const decode = vi.spyOn(XzPool.prototype, 'decode');
    const o = await serve(inPieces(FILE));
    const opened = await open(o);
    if (!opened.ok) throw opened.error;
    const chunks = await chunksOf(opened.nar);
    expect(chunks).toHaveLength(1);
    expect(chunks[0]!.equals(NAR)).toBe(true);
    expect(opened.nar.inputBytes).toBe(FILE.length);
    expect(decode).toHaveBeenCalledTimes(1);
    const pieces = decode.mock.calls[0]![0] as Buffer[];
    expect(Array.isArray(pieces) && pieces.length).toBeGreaterThan(1);
    expect(Buffer.concat(pieces).equals(FILE)).toBe(true);
  });

  it('more bytes than its FileSize: the origin\'s copy is not the file its narinfo describes (content), and nothing past FileSize is decoded', async () => {
    const decode = vi.spyOn(XzPool.prototype, 'decode');
    const o = await serve(inPieces(Buffer.concat([FILE, Buffer.alloc(5000)])));
    const opened = await open(o);
    if (!opened.ok) throw opened.error;
    await expect(chunksOf(opened.nar)).rejects.toMatchObject({ failure: 'content' });
    expect(decode).not.toHaveBeenCalled();
  });

  it('a file that is not xz: content', async () => {
    const o = await serve(inPieces(randomBytes(FILE.length)));
    const opened = await open(o);
    if (!opened.ok) throw opened.error;
    await expect(chunksOf(opened.nar)).rejects.toMatchObject({ failure: 'content' });
  });

  it('the origin goes quiet mid-file: slow; it resets mid-file: transport', async () => {
    const quiet = await serve((_req, res) => {
      res.writeHead(200, { 'content-length': FILE.length });
      res.write(FILE.subarray(0, 1000));
    });
    let opened = await open(quiet);
    if (!opened.ok) throw opened.error;
    await expect(chunksOf(opened.nar)).rejects.toMatchObject({ failure: 'slow' });
    await origin.close();
    const reset = await serve((req, res) => {
      res.writeHead(200, { 'content-length': FILE.length });
      res.write(FILE.subarray(0, 1000), () => req.socket.destroy());
    });
    opened = await open(reset);
    if (!opened.ok) throw opened.error;
    const err = await chunksOf(opened.nar).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SourceError);
    expect((err as SourceError).failure).toBe('transport');
  });

  it('the NAR route gives up half-way (Nix went away): the request is aborted at the origin, and nothing is decoded', async () => {
    const decode = vi.spyOn(XzPool.prototype, 'decode');
    let closed = false;
    const o = await serve((_req, res) => {
      res.socket!.once('close', () => (closed = true));
      res.writeHead(200, { 'content-length': FILE.length });
      res.write(FILE.subarray(0, 1000));
    });
    const opened = await open(o);
    if (!opened.ok) throw opened.error;
    opened.nar.close();
    await new Promise((r) => setTimeout(r, 100));
    expect(closed).toBe(true);
    expect(decode).not.toHaveBeenCalled();
  });

  it('404: absent; a 206 where the whole file was asked: unavailable', async () => {
    const o = await serve((req, res) => (req.url === '/nar/x.nar.xz' ? res.writeHead(404, { 'content-length': 0 }).end() : res.end()));
    const opened = await open(o);
    expect(opened.ok).toBe(false);
    if (!opened.ok) expect(opened.error.failure).toBe('absent');
    await origin.close();
    const partial = await serve((_req, res) => res.writeHead(206, { 'content-length': 3 }).end('abc'));
    const p = await open(partial);
    expect(p.ok).toBe(false);
    if (!p.ok) expect(p.error.failure).toBe('unavailable');
  });
});
