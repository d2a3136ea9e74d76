import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { describe, expect, it } from 'vitest';
import { startSlowLink } from '../bench/slow-relay.js';

describe('the slow link used by the benchmarks (test/bench/slow-relay.ts)', () => {
  it('delivers every byte in order, no faster than its rate, after its latency', async () => {
    const body = randomBytes(3 * 2 ** 20);
    const server = createServer((_req, res) => res.end(body));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const link = await startSlowLink({ target: { host: '127.0.0.1', port: (server.address() as { port: number }).port }, latencyMs: 100, downBytesPerSec: 6 * 2 ** 20 });
    try {
      const started = performance.now();
      const got = Buffer.from(await (await fetch(link.url)).arrayBuffer());
      const ms = performance.now() - started;
      expect(got.equals(body)).toBe(true);
      // 3 MiB at 6 MiB/s is 500 ms, plus a round trip of 200 ms; only a lower bound holds on a loaded machine.
      expect(ms).toBeGreaterThanOrEqual(650);
      expect(link.bytesDown()).toBeGreaterThanOrEqual(body.length);
    } finally {
      await link.close();
      await new Promise((r) => server.close(r));
    }
  });
});
