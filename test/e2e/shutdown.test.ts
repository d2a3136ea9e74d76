import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { request } from 'node:http';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseNarInfo } from '../../src/protocol/narinfo.js';
import { household, type Household } from '../helpers/scenario.js';
import { exitCode, startProxy } from '../helpers/proxy.js';
import { stopAll } from '../helpers/proc.js';

/** GETs a URL; `onFirstByte` runs when the first body bytes arrive. */
function fetchBody(url: string, onFirstByte?: () => void): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request(url, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => {
        if (chunks.length === 0) onFirstByte?.();
        chunks.push(c);
      });
      res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(20_000, () => req.destroy(new Error('timeout')));
    req.end();
  });
}

describe('graceful shutdown', () => {
  let h: Household;
  beforeAll(async () => {
    // 3 MB at 2 MB/s: the download is still running when SIGTERM arrives.
    h = await household('shutdown', [{ name: 'big', size: 3_000_000 }], { piLimitRate: '2m' });
  });
  afterAll(async () => {
    await stopAll();
    await h?.cleanup();
  });

  it('SIGTERM during a NAR download: the download completes whole, the proxy then exits 0', async () => {
    // Streamed, not held back until verified (holdMaxSeconds 0): the first byte comes while the Pi still sends.
    const config = join(h.dir, 'streamed.json');
    await writeFile(config, JSON.stringify({ cache: { holdMaxSeconds: 0 } }));
    const proxy = await startProxy(['--no-mdns', '--config', config, '--lan', h.pi.url, '--upstream', h.upstream.url, '--trusted-public-key', h.piKey.publicKey]);
    const big = h.closure.paths.find((p) => p.endsWith('-big'))!;
    const hash = big.slice(11, 43);
    const served = parseNarInfo((await fetchBody(`${proxy.url}/${hash}.narinfo`)).body.toString());
    const original = parseNarInfo(await readFile(join(h.piDir, `${hash}.narinfo`), 'utf8'));
    // The proxy hands Nix the NAR uncompressed: what `xz -dc` makes of the Pi's file.
    const nar = execFileSync('xz', ['-dc', join(h.piDir, original.url)], { maxBuffer: 1 << 28 });
    expect(nar.length).toBe(original.narSize);

    // SIGTERM as soon as the NAR is flowing (3 MB at 2 MB/s: it has most of its bytes still to send).
    let firstByteAt = 0;
    const download = fetchBody(`${proxy.url}/${served.url}`, () => {
      firstByteAt = Date.now();
      process.kill(proxy.child.pid!, 'SIGTERM');
    });
    const res = await download;
    expect(firstByteAt).toBeGreaterThan(0);
    expect(Date.now() - firstByteAt, 'the download went on after SIGTERM').toBeGreaterThan(500);
    expect(res.status).toBe(200);
    expect(res.body.equals(nar)).toBe(true);
    expect(await exitCode(proxy.child)).toBe(0);
    expect(proxy.logs.some((l) => l.event === 'shutdown')).toBe(true);
  });

  it.each([
    ['an uncaught exception', 'throw', 'crash'],
    ['an unhandled promise rejection', 'reject', 'bug'],
  ])('%s (a bug): logged at fatal with its stack, then the process exits non-zero for systemd to restart', async (_what, inject, event) => {
    const preload = new URL('./fixtures/inject-bug.mjs', import.meta.url).pathname;
    const proxy = await startProxy(['--no-mdns', '--upstream', h.upstream.url], { env: { NODE_OPTIONS: `--import=${preload}`, NLC_INJECT: inject } });
    const code = await exitCode(proxy.child);
    expect(code).toBe(1);
    const fatal = proxy.logs.find((l) => l.level === 60 && l.event === event) as { err?: { stack?: string; message?: string } } | undefined;
    expect(fatal, JSON.stringify(proxy.logs.slice(-3))).toBeDefined();
    expect(fatal!.err?.message).toBe('injected bug for the test');
    expect(fatal!.err?.stack).toMatch(/inject-bug\.mjs/);
  });

  it('SIGINT with nothing in flight exits at once', async () => {
    const proxy = await startProxy(['--no-mdns', '--upstream', h.upstream.url]);
    const started = Date.now();
    process.kill(proxy.child.pid!, 'SIGINT');
    await once(proxy.child, 'exit');
    expect(proxy.child.exitCode).toBe(0);
    expect(Date.now() - started).toBeLessThan(3000);
  });
});
