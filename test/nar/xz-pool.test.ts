import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { XzPool } from '../../src/nar/xz-pool.js';

const xz = (data: Buffer) => execFileSync('xz', ['-c', '-6'], { input: data, maxBuffer: 1 << 26 });
const text = (n: number) => Buffer.from(randomBytes(n).toString('base64').slice(0, n));

let pool: XzPool | undefined;
const threadsOf = (p: XzPool) => (p as unknown as { threads: Array<{ worker: { terminate(): Promise<number> } }> }).threads;
afterEach(async () => {
  await pool?.close();
  pool = undefined;
});

describe('xz decoder threads', () => {
  it.each([
    [2, 'on at most two threads'],
    [0, 'with no threads (two cores): on the main thread, one at a time'],
  ] as const)('decode whole files exactly, many at once, %i threads: %s', async (threads, _how) => {
    pool = new XzPool(threads);
    const inputs = Array.from({ length: 12 }, (_, i) => text(10_000 + i * 3000));
    const jobs = inputs.map((d) => pool!.decode(xz(d), d.length).result);
    expect(threadsOf(pool)).toHaveLength(threads);
    const results = await Promise.all(jobs);
    results.forEach((r, i) => expect(r.ok && r.output.equals(inputs[i]!)).toBe(true));
  });

  it.each([1, 0])('a corrupt file is an error of the file (corrupt), and decoding goes on with the next (%i threads)', async (threads) => {
    pool = new XzPool(threads);
    const good = text(20_000);
    const bad = xz(good);
    const at = bad.length >> 1;
    bad[at] = bad[at]! ^ 0xff;
    const r = await pool.decode(bad, good.length).result;
    expect(r).toMatchObject({ ok: false, corrupt: true });
    const next = await pool.decode(xz(good), good.length).result;
    expect(next.ok && next.output.equals(good)).toBe(true);
  });

  it.each([1, 0])('a file that decodes to more than it may (a bomb, or a lying narinfo) is stopped there (%i threads)', async (threads) => {
    pool = new XzPool(threads);
    const zeros = Buffer.alloc(20_000_000);
    const r = await pool.decode(xz(zeros), 1_000_000).result;
    expect(r).toMatchObject({ ok: false, corrupt: true });
    expect(!r.ok && r.message).toMatch(/more than 1000000 bytes/);
  });

  it.each([1, 0])('a cancelled job that waits is never decoded; the others are (%i threads)', async (threads) => {
    pool = new XzPool(threads);
    const a = text(50_000);
    const b = text(50_000);
    const first = pool.decode(xz(a), a.length);
    const second = pool.decode(xz(b), b.length);
    second.cancel();
    const r = await first.result;
    expect(r.ok && r.output.equals(a)).toBe(true);
    const third = await pool.decode(xz(b), b.length).result;
    expect(third.ok && third.output.equals(b)).toBe(true);
  });

  it('a thread that dies fails its job as not the file\'s fault; the next job gets a new thread', async () => {
    pool = new XzPool(1);
    const d = text(2_000_000);
    const job = pool.decode(xz(d), d.length);
    // Kill the thread while it works.
    await threadsOf(pool)[0]!.worker.terminate();
    const r = await job.result;
    expect(r).toMatchObject({ ok: false, corrupt: false });
    const again = await pool.decode(xz(d), d.length).result;
    expect(again.ok && again.output.equals(d)).toBe(true);
  });
});
