import { execFileSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { XzPool } from '../../src/nar/xz-pool.js';
import { storedXzStream } from '../../src/nar/xz-format.js';
import { decodeWhole } from '../../src/nar/xz-decode.js';

const xz = (data: Buffer) => execFileSync('xz', ['-c', '-6'], { input: data, maxBuffer: 1 << 26 });
const text = (n: number) => Buffer.from(randomBytes(n).toString('base64').slice(0, n));
/** The running `xz` children of a pool's processes. */
const children = (p: XzPool) => (p as unknown as { processes: Array<{ child?: ChildProcess }> }).processes.map((x) => x.child).filter((c): c is ChildProcess => !!c);

let pool: XzPool | undefined;
afterEach(() => {
  pool?.close();
  pool = undefined;
});

/** Files of text, their .xz, and a decode of each through the pool with its exact size. */
function decodeAll(p: XzPool, inputs: Buffer[], files: Buffer[] = inputs.map(xz), sizes = inputs.map((d) => d.length)) {
  return files.map((f, i) => p.decode(f, sizes[i]!, sizes[i]!).result);
}

describe('small xz files: long-lived xz processes, in process when they cannot', () => {
  it('many files through one xz process come out exact, each cut at its size', async () => {
    pool = new XzPool(1);
    const inputs = Array.from({ length: 40 }, (_, i) => text(1 + i * 3001));
    const results = decodeAll(pool, inputs);
    expect(children(pool)).toHaveLength(1);
    const pid = children(pool)[0]!.pid;
    (await Promise.all(results)).forEach((r, i) => expect(r.ok && r.output.equals(inputs[i]!)).toBe(true));
    // The same process decodes what comes next.
    const more = await Promise.all(decodeAll(pool, [text(5000)]));
    expect(more[0]!.ok).toBe(true);
    expect(children(pool)[0]!.pid).toBe(pid);
  });

  it('the pad after each file is 8 KiB (and its framing), and brings every file out by itself: no flush, no fallback', async () => {
    pool = new XzPool(1);
    const inputs = Array.from({ length: 20 }, (_, i) => text(1 + i * 5003));
    const proc = (pool as unknown as { processes: Array<{ flush(c: unknown): void }> }).processes[0]!;
    proc.flush = () => {}; // only the pads may push output out of xz
    const fallback = vi.spyOn(pool as unknown as { enqueue(job: unknown): void }, 'enqueue');
    const results = decodeAll(pool, inputs);
    const child = children(pool)[0]!;
    // What one more file costs through the pipe: its bytes, then the mark, the pad's stream and 8 KiB of stream padding.
    let written = 0;
    const stdin = child.stdin!;
    const write = stdin.write.bind(stdin) as (...a: unknown[]) => boolean;
    stdin.write = ((chunk: Buffer, ...rest: unknown[]) => {
      written += chunk.length;
      return write(chunk, ...rest);
    }) as typeof stdin.write;
    const last = text(40_000);
    const lastFile = xz(last);
    const lastResult = pool.decode(lastFile, last.length, last.length).result;
    (await Promise.all(results)).forEach((r, i) => expect(r.ok && r.output.equals(inputs[i]!)).toBe(true));
    const r = await lastResult;
    expect(r.ok && r.output.equals(last)).toBe(true);
    expect(fallback).not.toHaveBeenCalled();
    expect(children(pool)[0]!.pid).toBe(child.pid);
    expect(written - lastFile.length).toBeGreaterThanOrEqual(8192);
    expect(written - lastFile.length).toBeLessThanOrEqual(8192 + 512);
  });

  it('with no pad after each file (an xz that holds back more than 5.4 does), flushes bring every file out, exact', async () => {
    pool = new XzPool(1, { padAfterFiles: false, stallMs: 60_000 });
    const inputs = Array.from({ length: 10 }, (_, i) => text(1 + i * 7001));
    (await Promise.all(decodeAll(pool, inputs))).forEach((r, i) => expect(r.ok && r.output.equals(inputs[i]!)).toBe(true));
    // One more, alone, after the process went quiet.
    const last = text(3000);
    const [r] = await Promise.all(decodeAll(pool, [last]));
    expect(r!.ok && r!.output.equals(last)).toBe(true);
  });

  it('an xz starved of CPU is not fed more than 4 flushes; the stall time then decides, and the files come out exact', async () => {
    pool = new XzPool(1, { padAfterFiles: false, stallMs: 500 });
    const inputs = [text(30_000), text(30_000)];
    const results = decodeAll(pool, inputs);
    const proc = (pool as unknown as { processes: Array<{ flush(c: unknown): void; inFlight: unknown[]; files: number }> }).processes[0]!;
    const flush = proc.flush.bind(proc);
    let calls = 0;
    let most = 0;
    proc.flush = (c) => {
      flush(c);
      calls++;
      most = Math.max(most, proc.inFlight.length - proc.files);
    };
    children(pool)[0]!.kill('SIGSTOP');
    (await Promise.all(results)).forEach((r, i) => expect(r.ok && r.output.equals(inputs[i]!)).toBe(true));
    expect(calls).toBeGreaterThan(4);
    expect(most).toBe(4);
  });

  it('two processes share the files; all come out exact', async () => {
    pool = new XzPool(2);
    const inputs = Array.from({ length: 12 }, (_, i) => text(10_000 + i * 3000));
    const results = decodeAll(pool, inputs);
    expect(children(pool)).toHaveLength(2);
    (await Promise.all(results)).forEach((r, i) => expect(r.ok && r.output.equals(inputs[i]!)).toBe(true));
  });

  it.each([
    ['a flipped byte', (f: Buffer) => (f[f.length >> 1] = f[f.length >> 1]! ^ 0xff, f)],
    ['a truncated file', (f: Buffer) => f.subarray(0, f.length - 100)],
    ['HTML from a captive portal', () => Buffer.from('<html><body>Log in to the hotel Wi-Fi</body></html>\n')],
  ] as const)('%s among good files: that file alone is corrupt, the files before and after it come out exact', async (_name, spoil) => {
    pool = new XzPool(1);
    const inputs = Array.from({ length: 9 }, () => text(20_000));
    const files: Buffer[] = inputs.map(xz);
    files[4] = spoil(Buffer.from(files[4]!));
    const results = await Promise.all(decodeAll(pool, inputs, files));
    results.forEach((r, i) => (i === 4 ? expect(r).toMatchObject({ ok: false, corrupt: true }) : expect(r.ok && r.output.equals(inputs[i]!)).toBe(true)));
  });

  it('a file that decodes to more than its size (a bomb, or a lying narinfo) is stopped there; the next file is not blamed', async () => {
    pool = new XzPool(1);
    const next = text(20_000);
    const [bomb, after] = await Promise.all([pool.decode(xz(Buffer.alloc(20_000_000)), 1_000_000, 1_000_000).result, pool.decode(xz(next), next.length, next.length).result]);
    expect(bomb).toMatchObject({ ok: false, corrupt: true });
    expect(!bomb.ok && bomb.message).toMatch(/more than 1000000 bytes/);
    expect(after.ok && after.output.equals(next)).toBe(true);
  });

  it('a file that decodes to less than its size is handed on as it decodes (verification then fails it); the next file comes out exact', async () => {
    pool = new XzPool(1);
    const short = text(10_000);
    const next = text(20_000);
    const [r, after] = await Promise.all([pool.decode(xz(short), 12_000, 12_000).result, pool.decode(xz(next), next.length, next.length).result]);
    expect(r.ok && r.output.equals(short)).toBe(true);
    expect(after.ok && after.output.equals(next)).toBe(true);
  });

  it('the xz process killed mid-way: its files are decoded in process, exact, and the next file starts a new process', async () => {
    pool = new XzPool(1);
    const inputs = Array.from({ length: 6 }, () => text(200_000));
    const results = decodeAll(pool, inputs);
    const first = children(pool)[0]!;
    first.kill('SIGKILL');
    (await Promise.all(results)).forEach((r, i) => expect(r.ok && r.output.equals(inputs[i]!)).toBe(true));
    const more = decodeAll(pool, [text(1000)]);
    expect(children(pool)[0]!.pid).not.toBe(first.pid);
    expect((await more[0]!).ok).toBe(true);
  });

  it('an xz process that stops answering: after the stall time its files are decoded in process', async () => {
    pool = new XzPool(1, { stallMs: 300 });
    const inputs = [text(30_000), text(30_000)];
    const results = decodeAll(pool, inputs);
    const child = children(pool)[0]!;
    child.kill('SIGSTOP');
    (await Promise.all(results)).forEach((r, i) => expect(r.ok && r.output.equals(inputs[i]!)).toBe(true));
    expect(child.signalCode ?? (await once(child, 'exit'))[1]).toBe('SIGKILL');
  });

  it('no xz on PATH: every file is decoded in process', async () => {
    const path = process.env.PATH;
    process.env.PATH = '/nonexistent';
    try {
      pool = new XzPool(1);
      const inputs = [text(30_000), text(40_000)];
      const files = inputs.map((d) => execFileSync('/usr/bin/xz', ['-c'], { input: d, env: {} }));
      (await Promise.all(decodeAll(pool, inputs, files))).forEach((r, i) => expect(r.ok && r.output.equals(inputs[i]!)).toBe(true));
    } finally {
      process.env.PATH = path;
    }
  });

  it('a file of unknown size is decoded in process, to at most its limit', async () => {
    pool = new XzPool(1);
    const d = text(30_000);
    const r = await pool.decode(xz(d), 1_000_000).result;
    expect(r.ok && r.output.equals(d)).toBe(true);
    expect(children(pool)).toHaveLength(0);
  });

  it('a cancelled file is never handed on; the others are', async () => {
    pool = new XzPool(1);
    const [a, b, c] = [text(50_000), text(50_000), text(50_000)];
    const first = pool.decode(xz(a), a.length, a.length);
    const second = pool.decode(xz(b), b.length, b.length);
    const third = pool.decode(xz(c), c.length, c.length);
    second.cancel();
    let handed = false;
    void second.result.then(() => (handed = true));
    const [r1, r3] = await Promise.all([first.result, third.result]);
    expect(r1.ok && r1.output.equals(a)).toBe(true);
    expect(r3.ok && r3.output.equals(c)).toBe(true);
    expect(handed).toBe(false);
  });

  it('an idle xz process ends by itself and never keeps Node alive', async () => {
    pool = new XzPool(1, { idleMs: 100 });
    await Promise.all(decodeAll(pool, [text(1000)]));
    const child = children(pool)[0]!;
    const [, signal] = await once(child, 'exit');
    expect(signal).toBe('SIGKILL');
    expect(children(pool)).toHaveLength(0);
  });
});

describe('the stored .xz stream (the mark written after every file)', () => {
  it.each([1, 32, 1000, 65536])('%i random bytes decode exactly, by xz and by xz-decompress, also concatenated', async (n) => {
    const data = randomBytes(n);
    const stream = storedXzStream(data);
    expect(execFileSync('xz', ['-dc'], { input: Buffer.concat([stream, stream]) }).equals(Buffer.concat([data, data]))).toBe(true);
    expect((await decodeWhole(stream, n)).equals(data)).toBe(true);
  });
});
