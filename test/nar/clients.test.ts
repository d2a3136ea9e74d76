import { execFileSync } from 'node:child_process';
import { connect } from 'node:net';
import * as zlib from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { xzPool } from '../../src/nar/xz-pool.js';
import { formatLegacyNarUrl } from '../../src/protocol/narurl.js';
import { behave } from '../helpers/fake-cache.js';
import { fetchNar, scenario, type Scenario } from './harness.js';
import { until } from '../helpers/wait.js';

let s: Scenario | undefined;
afterEach(async () => {
  await s?.close();
  s = undefined;
});

/** The URL the proxy handed out before NARs were served uncompressed (Nix may hold it for 30 days). */
function legacyUrl(sc: Scenario, side: Scenario['pi'] = sc.pi, compression = 'xz'): string {
  const origin = sc.origins.ordered().find((o) => o.baseUrl === side.server.url)!;
  return `/${formatLegacyNarUrl({ storeHash: sc.fixture.storeHash, narHash: sc.fixture.narHash, compression, originId: origin.id, originUrl: side.url })}`;
}

/** Our own child processes by command name (decompressors left running would show here). */
function children(name: string): number {
  try {
    return execFileSync('ps', ['-o', 'comm=', '--ppid', String(process.pid)]).toString().split('\n').filter((l) => l.trim() === name).length;
  } catch {
    return 0; // ps exits 1 when there are none
  }
}

describe('legacy NAR URLs (handed out before the upgrade) still work', () => {
  it('GET: the origin\'s compressed file, as the cached narinfo promised', async () => {
    s = await scenario();
    await s.narinfo();
    const res = await s.app.inject({ method: 'GET', url: legacyUrl(s) });
    expect(res.statusCode).toBe(200);
    expect(res.rawPayload.equals(s.pi.file)).toBe(true);
  });

  it('HEAD on a legacy NAR URL answers and the proxy lives on (it used to die on the unread origin body)', async () => {
    s = await scenario();
    for (let i = 0; i < 3; i++) {
      const res = await s.app.inject({ method: 'HEAD', url: legacyUrl(s) });
      expect(res.statusCode).toBe(200);
      expect(res.rawPayload.length).toBe(0);
    }
    expect((await s.app.inject({ method: 'GET', url: legacyUrl(s) })).rawPayload.equals(s.pi.file)).toBe(true);
  });

  it('a Range the origin answers with 200: no crash, no misaligned bytes', async () => {
    s = await scenario();
    s.pi.nar(behave.ignoreRange());
    s.upstream.nar(behave.ignoreRange());
    const res = await s.app.inject({ method: 'GET', url: legacyUrl(s), headers: { range: 'bytes=100-' } });
    expect(res.statusCode).toBe(503);
    // And the new URL with the same Range is served, since the proxy never forwards a Range there.
    await s.narinfo();
    const ok = await s.app.inject({ method: 'GET', url: s.narUrl(), headers: { range: 'bytes=100-' } });
    expect(ok.statusCode).toBe(206);
    expect(ok.rawPayload.equals(s.fixture.nar.subarray(100))).toBe(true);
  });

  // Nix from 2.22 on decodes a NAR with the filter its narinfo names, no sniffing (test/e2e/nar-upgrade.test.ts with Nix 2.26 and 2.34).
  it.each([
    ['a large NAR', 'xz', 'zstd', 1_000_000],
    ['a small NAR', 'xz', 'zstd', 3000],
    ['a NAR', 'zstd', 'xz', 300_000],
  ] as const)('%s promised as %s, its origin gone, the other holds %s: the other\'s file re-compressed into the promised compression, whole', async (_what, promised, other, size) => {
    s = await scenario({ size, piCompression: promised, upstreamCompression: other });
    s.pi.nar(behave.status(404));
    const res = await fetchNar(await s.listen(), legacyUrl(s, s.pi, promised));
    expect(res.error).toBeUndefined();
    expect(res.status).toBe(200);
    expect(res.headers['accept-ranges']).toBeUndefined(); // bytes made here: nothing to resume
    expect(res.body.equals(s.upstream.file)).toBe(false);
    const decoded = promised === 'xz' ? execFileSync('xz', ['-dc'], { input: res.body, maxBuffer: 1 << 28 }) : (zlib as unknown as { zstdDecompressSync(b: Buffer): Buffer }).zstdDecompressSync(res.body);
    expect(decoded.equals(s.fixture.nar)).toBe(true);
    expect(s.upstream.server.requests.filter((r) => r.url === s!.upstream.url)).toHaveLength(1);
  });

  it('re-compressing: a Range (a resume) is not answered with bytes made here, and an upstream that breaks off aborts the response', async () => {
    xzPool().close(); // the long-lived decoder of small xz files (tests above) is not what this test counts
    s = await scenario({ size: 2_000_000, piCompression: 'xz', upstreamCompression: 'zstd' });
    s.pi.nar(behave.status(404));
    const base = await s.listen();
    const ranged = await fetchNar(base, legacyUrl(s), { range: 'bytes=1000-' });
    expect(ranged.status).toBe(404);
    s.upstream.nar(behave.resetAfter(Math.floor(s.upstream.file.length / 2)));
    // Cut before or after the head went out (xz holds its output back): either way never a clean end.
    const cut = await fetchNar(base, legacyUrl(s)).catch((err: unknown) => ({ error: String(err) }));
    expect(cut.error).toBeDefined();
    await until('the compressing xz to end', 10_000, () => children('xz') === 0);
  });
});

describe('clients that hang up mid-NAR', () => {
  it('200 clients gone mid-NAR: no origin request left open, no decompressor left running, memory flat, the proxy still serves', async () => {
    // The long-lived decoder of small xz files from the tests before (idle, it ends after 30 s) is not what this test counts.
    xzPool().close();
    s = await scenario({ size: 4_000_000 });
    await s.narinfo();
    // The Pi sends half of its xz file and then waits: every client is mid-NAR when it hangs up.
    s.pi.nar(behave.stallAfter(Math.floor(s.pi.file.length / 2)));
    const base = new URL(await s.listen());
    const path = s.narUrl();
    const rssBefore = process.memoryUsage().rss;
    for (let round = 0; round < 4; round++) {
      await Promise.all(
        Array.from({ length: 50 }, () =>
          new Promise<void>((resolve, reject) => {
            const sock = connect(Number(base.port), base.hostname, () => sock.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`));
            let got = 0;
            sock.on('data', (d: Buffer) => {
              got += d.length;
              if (got > 100_000) {
                sock.destroy();
                resolve();
              }
            });
            sock.on('error', reject);
            sock.setTimeout(20_000, () => reject(new Error('no NAR bytes within 20 s')));
          }),
        ),
      );
    }
    await until('the Pi to see every request closed', 10_000, () => s!.pi.server.open() === 0);
    await until('every xz process to end', 10_000, () => children('xz') === 0);
    const grownMiB = (process.memoryUsage().rss - rssBefore) / 2 ** 20;
    expect(grownMiB).toBeLessThan(100);
    expect(s.pi.server.requests.filter((r) => r.url === s!.pi.url)).toHaveLength(200);
    s.pi.nar(behave.ok());
    const res = await fetchNar(base.toString(), path);
    expect(res.body.equals(s.fixture.nar)).toBe(true);
  });
});
