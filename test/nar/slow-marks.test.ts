import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { openWithin } from '../../src/nar/head-deadline.js';
import { openNar } from '../../src/nar/nar-source.js';
import { SlowMarks } from '../../src/nar/slow-marks.js';
import { HttpOrigin } from '../../src/origins/http-origin.js';
import { TrustedKeys } from '../../src/protocol/signing.js';
import { behave, startFakeCache, type FakeCache } from '../helpers/fake-cache.js';
import { until } from '../helpers/wait.js';

const FILE = 'nar/file.nar';
const BODY = Buffer.alloc(300_000, 7);
const FAST = { forMs: 60_000, probeEveryMs: 100, probeDeadlineMs: 300, probeBytes: 64 * 1024 };

let cache: FakeCache | undefined;
let origin: HttpOrigin | undefined;
let marks: SlowMarks | undefined;
afterEach(async () => {
  marks?.close();
  await origin?.close();
  await cache?.close();
  cache = origin = marks = undefined;
});

async function pi(kind: 'lan' | 'peer' | 'upstream' = 'lan'): Promise<{ cache: FakeCache; origin: HttpOrigin }> {
  cache = await startFakeCache();
  cache.files.set(FILE, { body: BODY, behaviour: behave.ok() });
  origin = new HttpOrigin({
    url: cache.url,
    kind,
    name: 'pi',
    timeouts: { connectMs: 500, firstByteMs: 2000, bodyIdleMs: 2000, probeIntervalMs: 60_000, maxFails: 1, hedgeMs: 0 },
    trusted: new TrustedKeys([]),
    log: pino({ level: 'silent' }),
  });
  return { cache, origin };
}

const probes = () => cache!.requests.filter((r) => r.url === FILE && r.range === `bytes=0-${FAST.probeBytes - 1}`).length;

describe('a LAN cache left for a slow NAR is used again as soon as it proves itself (nar/slow-marks.ts)', () => {
  it.each([
    ['drips 1 KiB every 100 ms', () => behave.drip(1024, 100)],
    ['sends its head and then nothing', () => behave.silent()],
    ['resets every connection after its head', () => behave.resetAfter(0)],
  ])('while it %s the mark stays (probed, never cleared); once it serves again the mark is cleared and `back` is emitted', async (_what, away) => {
    const { cache, origin } = await pi();
    marks = new SlowMarks(FAST);
    const back: string[] = [];
    marks.on('back', (o) => back.push(o.name));
    cache.files.set(FILE, { body: BODY, behaviour: away() });
    marks.mark(origin, FILE);
    await until('three probes', 5000, () => probes() >= 3 || undefined);
    expect(marks.has(origin)).toBe(true);
    expect(back).toEqual([]);
    // One probe at a time, and every probe that failed was given up, not left open at the Pi.
    expect(cache.open()).toBeLessThanOrEqual(1);

    cache.files.set(FILE, { body: BODY, behaviour: behave.ok() });
    const returned = Date.now();
    await until('the mark is cleared', 3000, () => !marks!.has(origin) || undefined);
    expect(Date.now() - returned).toBeLessThan(1000);
    expect(back).toEqual(['pi']);
  });

  it("another machine's share (a peer) left for a slow NAR is probed the same way, and used again once it serves", async () => {
    const { cache, origin } = await pi('peer');
    marks = new SlowMarks(FAST);
    const back: string[] = [];
    marks.on('back', (o) => back.push(o.name));
    cache.files.set(FILE, { body: BODY, behaviour: behave.drip(1024, 100) });
    marks.mark(origin, FILE);
    await until('two probes', 5000, () => probes() >= 2 || undefined);
    expect(marks.has(origin)).toBe(true);
    cache.files.set(FILE, { body: BODY, behaviour: behave.ok() });
    await until('the mark is cleared', 3000, () => !marks!.has(origin) || undefined);
    expect(back).toEqual(['pi']);
  });

  it('refused: the mark stays until the Pi listens again', async () => {
    const { origin } = await pi();
    marks = new SlowMarks(FAST);
    await cache!.close(); // nothing listens on its port now
    marks.mark(origin, FILE);
    await new Promise((r) => setTimeout(r, 500));
    expect(marks.has(origin)).toBe(true);
  });

  it('an upstream is not probed: its mark just ends', async () => {
    const { origin } = await pi('upstream');
    marks = new SlowMarks({ ...FAST, forMs: 300 });
    marks.mark(origin, FILE);
    expect(marks.has(origin)).toBe(true);
    await new Promise((r) => setTimeout(r, 500));
    expect(probes()).toBe(0);
    expect(marks.has(origin)).toBe(false);
  });
});

describe('the head deadline gives up on a quiet Pi, not on a busy one (nar/head-deadline.ts)', () => {
  it('a Pi that answers nothing at all within the deadline is given up on, and its request closed', async () => {
    const { cache, origin } = await pi();
    cache.files.set(FILE, { body: BODY, behaviour: () => {} }); // no head, ever
    const started = Date.now();
    const r = await openWithin(openNar, origin, { url: FILE, compression: 'none' }, new AbortController().signal, 150);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.error.failure).toBe('slow');
    expect(Date.now() - started).toBeLessThan(1000);
    await until('the request is closed at the Pi', 2000, () => cache.open() === 0 || undefined);
  });

  it('a Pi whose head is late but that answers other requests meanwhile (a busy link) is waited for', async () => {
    const { cache, origin } = await pi();
    // The head comes after 600 ms, four deadlines late; meanwhile the Pi answers other requests every 50 ms.
    cache.files.set(FILE, { body: BODY, behaviour: (req, res, body) => void setTimeout(() => behave.ok()(req, res, body), 600) });
    cache.files.set('other', { body: Buffer.from('x'), behaviour: behave.ok() });
    let busy = true;
    const others = (async () => {
      for (let i = 0; i < 100 && busy; i++) {
        const res = await origin.fetchFile('other');
        if (res.status === 'present') res.body.resume();
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const r = await openWithin(openNar, origin, { url: FILE, compression: 'none' }, new AbortController().signal, 150);
    busy = false;
    await others;
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const chunks: Buffer[] = [];
    for await (const c of r.nar.chunks) chunks.push(c);
    expect(Buffer.concat(chunks).equals(BODY)).toBe(true);
  });

  it('the client goes away while the head is late: the request ends at once, and it is not called slow', async () => {
    const { cache, origin } = await pi();
    cache.files.set(FILE, { body: BODY, behaviour: () => {} });
    const client = new AbortController();
    setTimeout(() => client.abort(), 50);
    const r = await openWithin(openNar, origin, { url: FILE, compression: 'none' }, client.signal, 150);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.error.failure).not.toBe('slow');
    await until('the request is closed at the Pi', 2000, () => cache.open() === 0 || undefined);
  });
});
