import { request } from 'node:http';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { LINKS, startLink, type LinkMode } from '../helpers/link.js';
import { NIX_CLIENTS, type NixClient } from '../helpers/nix-clients.js';
import { household, type Household } from '../helpers/scenario.js';
import { startProxy, type ProxyProcess } from '../helpers/proxy.js';
import { run, stopAll } from '../helpers/proc.js';
import { nixEnv, removeDir, substitute } from '../helpers/nix.js';
import { piHome, type NarRead, type PiHome } from '../helpers/pi-home.js';
import { parseNarInfo } from '../../src/protocol/narinfo.js';

const LEAVES = Array.from({ length: 4 }, (_, i) => ({ name: `leaf${i}`, size: 50_000 }));

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** A raw HTTP request: the path goes on the wire exactly as given (no URL normalisation). */
function get(base: string, path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Answer> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path, method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
    req.end();
  });
}

describe('the proxy as an HTTP server', () => {
  let h: Household;
  let proxy: ProxyProcess;
  const hashOf = (p: string) => p.slice('/nix/store/'.length, '/nix/store/'.length + 32);

  beforeAll(async () => {
    h = await household('returns', LEAVES);
    proxy = await startProxy(['--no-mdns', '--lan', h.pi.url, '--upstream', h.upstream.url, '--trusted-public-key', h.piKey.publicKey, '--trusted-public-key', h.upstreamKey.publicKey]);
  });
  afterAll(async () => {
    await proxy?.stop();
    await stopAll();
    await h?.cleanup();
  });

  it('the Pi returns: within 5 s new requests are served from it again', async () => {
    const [first, second] = h.closure.paths;
    await h.pi.stop();
    const away = await get(proxy.url, `/${hashOf(first!)}.narinfo`);
    expect(away.status).toBe(200);
    expect(away.headers['x-nix-lan-cache-origin']).toBe(new URL(h.upstream.url).host);

    await h.pi.start();
    const back = Date.now();
    let origin: unknown;
    for (let i = 0; i < 100 && Date.now() - back < 5000; i++) {
      origin = (await get(proxy.url, `/${hashOf(second!)}.narinfo`)).headers['x-nix-lan-cache-origin'];
      if (origin === new URL(h.pi.url).host) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(origin).toBe(new URL(h.pi.url).host);
    expect(Date.now() - back).toBeLessThan(5000);

    // And a fresh client gets every NAR from the Pi again (fetched now, or ahead: the loop's narinfo requests above
    // made the proxy fetch that path's NAR from the Pi already), none from upstream.
    type Nar = { requests: number; bytes: number };
    const nars = async () => {
      const s = (await (await fetch(`${proxy.url}/_/stats`)).json()) as { periods: { sinceInstall: { origins: Record<string, { nar: Nar }> } } };
      const of = (url: string) => s.periods.sinceInstall.origins[new URL(url).host]?.nar ?? { requests: 0, bytes: 0 };
      return { pi: of(h.pi.url), upstream: of(h.upstream.url) };
    };
    const before = await nars();
    const res = await h.fetch(proxy.url, { xdgCache: join(h.dir, 'xdg-back') });
    expect(res.code, res.stderr).toBe(0);
    const after = await nars();
    expect(after.pi.requests - before.pi.requests).toBe(h.closure.paths.length);
    expect(after.upstream).toEqual(before.upstream);
    const piFiles = new Set((await h.pi.narHits()).map((e) => e.uri));
    expect(piFiles.size).toBeGreaterThanOrEqual(h.closure.paths.length);
  });

  it('serves its own nix-cache-info and narinfos whose URL points back at the proxy, signatures intact', async () => {
    const info = await get(proxy.url, '/nix-cache-info');
    expect(info.body.toString()).toMatch(/^StoreDir: \/nix\/store\nWantMassQuery: 1\nPriority: \d+\n$/);
    const path = h.closure.paths[0]!;
    const served = parseNarInfo((await get(proxy.url, `/${hashOf(path)}.narinfo`)).body.toString());
    const original = parseNarInfo(await readFile(join(h.piDir, `${hashOf(path)}.narinfo`), 'utf8'));
    // Only unsigned fields change: the NAR reaches Nix uncompressed, named by its content.
    expect(served.url).toBe(`nar/${hashOf(path)}-${original.narHash.slice(7)}.nar`);
    expect(served).toMatchObject({ compression: 'none', fileHash: original.narHash, fileSize: original.narSize });
    const unsigned = { url: '', compression: '', fileHash: undefined, fileSize: undefined };
    expect({ ...served, ...unsigned }).toEqual({ ...original, ...unsigned });
    const head = await get(proxy.url, `/${hashOf(path)}.narinfo`, {}, 'HEAD');
    expect(head.status).toBe(200);
    expect(head.body.length).toBe(0);
  });

  it('Range requests on a NAR return exactly those bytes of the NAR (nix-store --dump)', async () => {
    const path = h.closure.paths[0]!;
    const served = parseNarInfo((await get(proxy.url, `/${hashOf(path)}.narinfo`)).body.toString());
    const file = Buffer.from((await run('sh', ['-c', `nix-store --dump '${path}' | base64 -w0`], { env: nixEnv() })).stdout, 'base64');
    expect(file.length).toBe(served.narSize);
    const whole = await get(proxy.url, `/${served.url}`);
    expect(whole.status).toBe(200);
    expect(whole.headers['accept-ranges']).toBe('bytes');
    expect(whole.body.equals(file)).toBe(true);
    const part = await get(proxy.url, `/${served.url}`, { range: 'bytes=100-' });
    expect(part.status).toBe(206);
    expect(part.headers['content-range']).toBe(`bytes 100-${file.length - 1}/${file.length}`);
    expect(part.body.equals(file.subarray(100))).toBe(true);
  });

  it('bad input gets a clear 4xx and the proxy stays up', async () => {
    const cases: Array<[string, number, string]> = [
      ['/tooshort.narinfo', 400, 'BAD_HASH'],
      ['/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee.narinfo', 400, 'BAD_HASH'], // 'e' is not in Nix's base-32
      ['/nar/../../etc/passwd', 400, 'BAD_PATH'],
      ['/nar/%2e%2e/%2e%2e/etc/passwd', 400, 'BAD_PATH'],
      ['/log/..', 400, 'BAD_PATH'],
      ['/nar/not-a-proxy-url.nar.xz', 400, 'BAD_PATH'],
      [`/${'a'.repeat(5000)}.narinfo`, 414, 'URI_TOO_LONG'],
      ['/no/such/route', 404, 'NOT_FOUND'],
      ['/favicon.ico', 404, 'NOT_FOUND'],
      ['/00000000000000000000000000000000.narinfo', 404, 'NOT_IN_ANY_ORIGIN'],
    ];
    for (const [path, status, code] of cases) {
      const res = await get(proxy.url, path);
      expect({ path, status: res.status }).toEqual({ path, status });
      expect(JSON.parse(res.body.toString())).toMatchObject({ error: code });
    }
    const post = await get(proxy.url, '/nix-cache-info', {}, 'POST');
    expect(post.status).toBe(404);
    expect(proxy.child.exitCode).toBeNull();
    expect((await get(proxy.url, '/nix-cache-info')).status).toBe(200);
  });
});

/** What the Pi does while it is away (test/helpers/link.ts). */
const AWAY: LinkMode[] = ['refused', 'blackhole', 'slow', 'drip'];
/** How long the Pi stays away at least, Nix working all the while: past every first-byte timeout, and its probes fail. */
const AWAY_MS = 3000;
/** How soon after it is back the Pi must serve a NAR again (issue 22). */
const BACK_WITHIN_MS = 5000;
/** How long the laptop goes on after the Pi is back, at most, to see when it is used again (or that it is not). */
const WATCH_MS = 15_000;

describe('the Pi comes back, whatever it did while away: real Nix gets NARs from it again within 5 s', () => {
  let home: PiHome;

  // 13 paths of 60 kB of text, two levels under the root.
  beforeAll(async () => void (home = await piHome('back', { levels: 2, width: 6, fanout: 2, bytes: 60_000 })), 600_000);
  afterAll(async () => {
    await stopAll();
    await home?.cleanup();
  });

  /**
   * One laptop and its proxy: its Nix keeps its narinfo cache from one command to the next (as ~/.cache/nix
   * does), and each command substitutes the closure into a fresh store, so it fetches every NAR again. `left`:
   * the laptop used the Pi before it went away (the proxy holds the Pi's narinfos, Nix asks it for NARs only,
   * each tried at the Pi first); otherwise it first meets the Pi away (the proxy finds the narinfos upstream
   * while the Pi does not answer in time, and keeps them).
   */
  async function leaveAndReturn(client: NixClient, mode: LinkMode, left: boolean): Promise<void> {
    const { closure, upstream } = home;
    const link = await startLink({ target: { host: '127.0.0.1', port: home.pi.port }, ...LINKS.wifi });
    onTestFinished(() => link.close());
    const proxy = await home.proxyBehind(link);
    onTestFinished(() => proxy.stop());
    const name = `${client.suite}-${mode}-${left ? 'left' : 'away'}`;
    const xdgCache = join(home.dir, `xdg-${name}`);
    let n = 0;
    const nix = async () => {
      const store = join(home.dir, `store-${name}-${++n}`);
      const res = await substitute(store, [closure.root], proxy.url, { client, xdgCache, trustedKeys: home.trustedKeys, timeoutMs: 90_000, wrapper: home.laptop });
      await removeDir(store);
      expect(res.code, res.stderr.slice(-2000)).toBe(0);
      return Math.round(res.ms);
    };
    const narsToNix = async () => {
      const s = (await (await fetch(`${proxy.url}/_/stats`)).json()) as { periods: { sinceInstall: { origins: Record<string, { nar: { requests: number } }> } } };
      const of = (url: string) => s.periods.sinceInstall.origins[new URL(url).host]?.nar.requests ?? 0;
      return { pi: of(link.url), upstream: of(upstream.url) };
    };

    if (left) await nix();
    const before = await narsToNix();
    await link.setMode(mode);
    const gone = Date.now();
    const away: number[] = [];
    for (let i = 0; i < 40 && (i === 0 || Date.now() - gone < AWAY_MS); i++) away.push(await nix());
    const whileAway = await narsToNix();
    // Nix worked all the while, from upstream.
    expect(whileAway.upstream - before.upstream).toBeGreaterThan(0);

    await link.setMode('up');
    const back = Date.now();
    let first: NarRead | undefined;
    const commands: number[] = [];
    for (let i = 0; i < 40 && !first && Date.now() - back < WATCH_MS; i++) {
      commands.push(await nix());
      first = (await home.piNarReads()).find((r) => r.startedAt >= back);
    }
    const after = await narsToNix();
    const why = JSON.stringify(proxy.logs.filter((l) => Number(l.level) >= 40 || ['origin-state', 'origin-back', 'origin-slow', 'origin-answers'].includes(String(l.event))).slice(-8));
    console.log(
      `${client.name}, ${left ? 'left home' : 'started away'}, the Pi ${mode}: away ${back - gone} ms, ${away.length} commands of ${Math.min(...away)}-${Math.max(...away)} ms ` +
        `(NARs from upstream ${whileAway.upstream - before.upstream}, the Pi ${whileAway.pi - before.pi}); back: first NAR read from the Pi ` +
        `${first ? `${first.startedAt - back} ms` : `none in ${WATCH_MS / 1000} s`} after its return, commands ${commands.join(', ')} ms; NARs to Nix since: from the Pi ${after.pi - whileAway.pi}, upstream ${after.upstream - whileAway.upstream}`,
    );
    expect(first, why).toBeDefined();
    expect(first!.startedAt - back, why).toBeLessThan(BACK_WITHIN_MS);
    expect(after.pi - whileAway.pi, why).toBeGreaterThan(0);
  }

  describe.each(NIX_CLIENTS)('$name', (client) => {
    it.each(AWAY)('left home, the Pi %s while Nix works from upstream, then back: its first NAR read comes within 5 s', (mode) => leaveAndReturn(client, mode, true), 120_000);
    it.each(AWAY)('started away, the Pi %s while Nix works from upstream, then back: its first NAR read comes within 5 s', (mode) => leaveAndReturn(client, mode, false), 120_000);
  });
});
