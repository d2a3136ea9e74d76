import type { ServerResponse } from 'node:http';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { behave, type Behaviour } from '../helpers/fake-cache.js';
import { until } from '../helpers/wait.js';
import { fetchNar, house, type House } from './harness.js';

/**
 * Every response from an origin that the proxy gives up on is destroyed at
 * once, never left paused (issue 26): a late response head, a NAR left for
 * another origin, a client gone, a NAR fetched ahead that Nix never came
 * for, a breaker probe, a slow-mark probe, an error page. Each Pi here hands
 * its response over, and once the proxy has given up, sends 64 KiB more with
 * `Connection: close` and a FIN, as a Pi going away does: a body left paused
 * by the proxy would then meet that FIN with its parser paused, which killed
 * the proxy under undici 7 (nodejs/undici#5360). Each test checks that the
 * proxy had closed the connection by then, and that it stays up.
 */

/** What one of the Pi's responses saw. */
interface HandOver {
  /** The response was sent (its head). */
  started: boolean;
  /** The proxy closed the connection. */
  closed: boolean;
  /** The Pi hung up with the proxy's connection still open (64 KiB more and a FIN). */
  hungUpOnOpen: boolean;
}

/**
 * A Pi's response that is handed over and then abandoned by the Pi: its head
 * (Connection: close, the file's length) once `head` resolves, `first`
 * bytes of `body`, then, when `hangUp` resolves, 64 KiB more and a FIN.
 */
function handOver(seen: HandOver[], hangUp: Promise<void>, opts: { first: number; head?: Promise<void>; status?: number; body?: Buffer }): Behaviour {
  return async (_req, res: ServerResponse, file) => {
    const body = opts.body ?? file;
    const h: HandOver = { started: false, closed: false, hungUpOnOpen: false };
    seen.push(h);
    res.once('close', () => (h.closed = true));
    await opts.head;
    if (h.closed) return;
    h.started = true;
    res.writeHead(opts.status ?? 200, { 'content-length': body.length, connection: 'close' });
    res.write(body.subarray(0, opts.first));
    await hangUp;
    if (h.closed) return;
    h.hungUpOnOpen = true;
    res.write(body.subarray(opts.first, opts.first + 64 * 1024));
    res.socket?.end();
  };
}

/** `first` for the first request, `rest` after it (probes come every interval; the test follows one). */
function onlyFirst(first: Behaviour, rest: Behaviour = behave.status(404)): Behaviour {
  let n = 0;
  return (req, res, body) => (n++ === 0 ? first : rest)(req, res, body);
}

let h: House | undefined;
let seen: HandOver[];
let release: () => void;
let hangUp: Promise<void>;
const crashes: unknown[] = [];
const onCrash = (err: unknown) => crashes.push(err);

beforeEach(() => {
  seen = [];
  crashes.length = 0;
  hangUp = new Promise((r) => (release = r));
  process.on('uncaughtException', onCrash);
});
afterEach(async () => {
  release();
  process.off('uncaughtException', onCrash);
  await h?.close();
  h = undefined;
});

/** The proxy gave up on the Pi's response: its connection is closed at once; then the Pi hangs up, and the proxy is still up. */
async function expectGivenUp(what: string, withinMs = 1000): Promise<void> {
  await until(`the proxy closing its connection to the Pi (${what})`, withinMs, () => (seen.length > 0 && seen.every((s) => s.closed)) || undefined);
  release();
  await new Promise((r) => setTimeout(r, 200));
  expect(seen.filter((s) => s.hungUpOnOpen)).toEqual([]);
  expect(crashes).toEqual([]);
  expect((await h!.app.inject({ method: 'GET', url: '/nix-cache-info' })).statusCode).toBe(200);
}

const SIZE = 1_000_000;
const narUrl = async (house: House) => `/${/^URL: (.*)$/m.exec(await house.narinfo(house.paths[0]!))![1]!}`;

describe('the proxy gives up on an origin response: destroyed at once, and a FIN afterwards does not hurt', () => {
  it('a late response head (the NAR head deadline): the NAR comes from upstream, the late request is closed', async () => {
    h = await house({ size: SIZE, piCompression: 'none', lanNarHeadMs: 150 });
    const url = await narUrl(h);
    h.pi.nar(h.paths[0]!, handOver(seen, hangUp, { first: 100_000, head: hangUp }));
    const res = await fetchNar(await h.listen(), url);
    expect(res.body.equals(h.paths[0]!.nar)).toBe(true);
    await expectGivenUp('late head');
  });

  it('a NAR left half-way for another origin (the slow rule): the rest comes from upstream, the Pi\'s response is closed', async () => {
    h = await house({ size: SIZE, piCompression: 'none', slowRule: { minBytesPerSecond: 100_000, windowMs: 300 } });
    const url = await narUrl(h);
    h.pi.nar(h.paths[0]!, handOver(seen, hangUp, { first: 100_000 }));
    const res = await fetchNar(await h.listen(), url);
    expect(res.error).toBeUndefined();
    expect(res.body.equals(h.paths[0]!.nar)).toBe(true);
    await expectGivenUp('failover');
  });

  it('a NAR that is not what its narinfo says (HTML): upstream serves, the Pi\'s response is closed', async () => {
    h = await house({ size: SIZE, piCompression: 'none' });
    const url = await narUrl(h);
    h.pi.nar(h.paths[0]!, handOver(seen, hangUp, { first: 100_000, body: Buffer.alloc(SIZE, '<html>') }));
    const res = await fetchNar(await h.listen(), url);
    expect(res.body.equals(h.paths[0]!.nar)).toBe(true);
    await expectGivenUp('content');
  });

  it('Nix hangs up in the middle of a NAR: the Pi\'s response is closed', async () => {
    h = await house({ size: SIZE, piCompression: 'none', noUpstream: true });
    const url = await narUrl(h);
    h.pi.nar(h.paths[0]!, handOver(seen, hangUp, { first: 100_000 }));
    const base = await h.listen();
    const ac = new AbortController();
    const { request } = await import('undici');
    const res = await request(new URL(url, base), { signal: ac.signal });
    for await (const _ of res.body) break; // the first bytes, then gone
    ac.abort();
    await expectGivenUp('client gone');
  });

  it('a NAR fetched ahead that Nix never comes for: dropped after the idle time, the Pi\'s response is closed', async () => {
    h = await house({ size: SIZE, piCompression: 'none', narPrefetch: { idleMs: 300 } });
    h.pi.nar(h.paths[0]!, handOver(seen, hangUp, { first: 100_000 }));
    await narUrl(h); // Nix asks for the narinfo: the NAR is fetched ahead
    await until('the fetch ahead started', 2000, () => seen.some((s) => s.started) || undefined);
    await until('the fetch ahead dropped', 3000, () => h!.stats.state.narPrefetch.wasted === 1 || undefined);
    await expectGivenUp('prefetch dropped');
  });

  it('the breaker\'s probe of an open circuit, answered with a head and then silence: the probe is closed', async () => {
    h = await house({ size: SIZE, piCompression: 'none', lanTimeouts: { connectMs: 200, firstByteMs: 300, probeIntervalMs: 100 } });
    h.pi.server.files.set('nix-cache-info', { body: Buffer.alloc(SIZE, 'S'), behaviour: onlyFirst(handOver(seen, hangUp, { first: 100 })) });
    h.origins.ordered()[0]!.reportFailure('test: open the circuit');
    await until('a probe answered', 2000, () => seen.some((s) => s.started) || undefined);
    await expectGivenUp('breaker probe');
  });

  it('the slow-mark probe of a Pi left for a slow NAR, answered and then stalled: the probe is closed', async () => {
    h = await house({ size: SIZE, piCompression: 'none', slowRule: { minBytesPerSecond: 100_000, windowMs: 300 } });
    const url = await narUrl(h);
    const stall = handOver([], new Promise(() => {}), { first: 10_000 });
    h.pi.nar(h.paths[0]!, stall); // the NAR itself stalls: the Pi is left and marked slow
    const res = await fetchNar(await h.listen(), url);
    expect(res.body.equals(h.paths[0]!.nar)).toBe(true);
    h.pi.nar(h.paths[0]!, onlyFirst(handOver(seen, hangUp, { first: 10_000 }))); // its first probe gets a head, then silence
    await until('a probe answered', 3000, () => seen.some((s) => s.started) || undefined);
    await expectGivenUp('slow-mark probe', 2000);
  });

  it('an error page that never ends (503 with a large body): closed, not drained', async () => {
    h = await house({ size: SIZE, piCompression: 'none' });
    const url = await narUrl(h);
    h.pi.nar(h.paths[0]!, handOver(seen, hangUp, { first: 100_000, status: 503 }));
    const res = await fetchNar(await h.listen(), url);
    expect(res.body.equals(h.paths[0]!.nar)).toBe(true);
    await expectGivenUp('error page');
  });
});
