import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import type { ShareSnapshot, StatsResponse } from '../../src/api.js';
import type { Finding } from '../../src/doctor/finding.js';
import { checkShare } from '../../src/doctor/share.js';
import { substituteInto, addUnsigned } from '../helpers/laptop-store.js';
import { NIX_CLIENTS } from '../helpers/nix-clients.js';
import { buildClosure, buildPath, generateKey, makeStaticCache, removeDir, substitute, tempDir, type CacheKey, type Closure } from '../helpers/nix.js';
import { blackhole, freePort } from '../helpers/ports.js';
import { run, stopAll } from '../helpers/proc.js';
import { CLI, startProxy, type ProxyProcess } from '../helpers/proxy.js';

const LEAVES = Array.from({ length: 5 }, (_, i) => ({ name: `leaf${i}`, size: 30_000 + i * 7000 }));

/**
 * What the README documents, on loopback: one proxy shares its store
 * (`serve --share --share-listen 127.0.0.1:PORT`), another uses it
 * (`serve --peer http://127.0.0.1:PORT/`), its upstream a blackhole (a port
 * that accepts and never answers). Real Nix, every version, substitutes the
 * closure through the second proxy: all of it from the first machine's store.
 */
describe('serve --share on one proxy, serve --peer on another, on loopback', () => {
  let dir: string;
  let closure: Closure;
  let own: string;
  let key: CacheKey;
  let storeA: string;
  let a: ProxyProcess;
  let b: ProxyProcess;
  let shareUrl: string;
  let hole: Awaited<ReturnType<typeof blackhole>>;

  beforeAll(async () => {
    dir = await tempDir('share-loopback');
    [closure, own] = await Promise.all([buildClosure('share-loopback', LEAVES), buildPath('share-loopback', 'built-on-a', '/bin/echo a > $out')]);
    key = await generateKey(dir, 'upstream-1');
    await makeStaticCache(join(dir, 'cache'), [closure.root], key, 'xz');
    storeA = join(dir, 'a-store');
    await substituteInto(storeA, [closure.root], join(dir, 'cache'), key);
    await addUnsigned(storeA, [own]);
    hole = await blackhole();
    // As the README has it: `serve --share --share-listen 127.0.0.1:PORT`, and `serve --peer http://127.0.0.1:PORT/`.
    const port = await freePort();
    a = await startProxy(['--no-mdns', '--share', '--share-listen', `127.0.0.1:${port}`, '--share-store', storeA, '--upstream', hole.url, '--trusted-public-key', key.publicKey]);
    shareUrl = `http://127.0.0.1:${port}/`;
    expect(a.logs.find((l) => l.event === 'share-started')?.urls).toEqual([shareUrl]);
    // B's upstream is silent: its first-byte timeout shortened from 15 s, so a path A does not give costs the test 2 s, not 15.
    await writeFile(join(dir, 'b.json'), JSON.stringify({ timeouts: { upstream: { firstByteMs: 2000 } } }));
    b = await startProxy(['--no-mdns', '--config', join(dir, 'b.json'), '--peer', shareUrl, '--upstream', hole.url, '--trusted-public-key', key.publicKey]);
  });
  afterAll(async () => {
    await stopAll();
    await hole?.close();
    if (dir) await removeDir(dir);
  });

  async function stats(p: ProxyProcess): Promise<StatsResponse> {
    return (await (await fetch(`${p.url}/_/stats`)).json()) as StatsResponse;
  }

  for (const client of NIX_CLIENTS) {
    it(`${client.name} substitutes the closure through B, every NAR from A's store`, async () => {
      const before = (await (await fetch(`${a.url}/_/share`)).json()) as { totals: { nars: number; bytes: number } };
      const store = join(dir, `b-${client.suite}`);
      const res = await substitute(store, [closure.root], b.url, { client, xdgCache: join(dir, `xdg-${client.suite}`), trustedKeys: [key.publicKey], timeoutMs: 90_000 });
      expect(res.code, res.stderr).toBe(0);
      expect(closure.paths.every((p) => existsSync(join(store, p)))).toBe(true);
      const after = (await (await fetch(`${a.url}/_/share`)).json()) as { totals: { nars: number; bytes: number } };
      expect(after.totals.nars - before.totals.nars).toBeGreaterThanOrEqual(closure.paths.length);
      const peer = (await stats(b)).origins.find((o) => o.kind === 'peer');
      expect(peer?.url).toBe(shareUrl);
    });
  }

  it('B counts what came from the peer; `nix-lan-cache stats` lists it as a peer; A says what it gave, and to whom', async () => {
    const s = await stats(b);
    const since = s.periods.sinceInstall;
    expect(since.client.narinfoFromPeers).toBeGreaterThanOrEqual(closure.paths.length);
    expect(since.client.narinfoFromUpstream).toBe(0);
    expect(since.nar.peerBytes).toBeGreaterThan(0);
    expect(since.nar.upstreamBytes).toBe(0);
    expect(since.bytesKeptOffInternet).toBe(since.nar.peerBytes);
    const table = await run(process.execPath, [CLI, 'stats', '--url', b.url], { timeoutMs: 15_000 });
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(new RegExp(`\\n127\\.0\\.0\\.1:\\d+\\s+peer\\s+up\\s`));
    expect(table.stdout).toMatch(/from peers\s/);
    const share = (await (await fetch(`${a.url}/_/share`)).json()) as { urls: string[]; totals: { narinfoServed: number }; clients: Array<{ client: string; bytes: number }> };
    expect(share.urls).toEqual([shareUrl]);
    expect(share.totals.narinfoServed).toBeGreaterThanOrEqual(closure.paths.length);
    expect(share.clients[0]).toMatchObject({ client: '127.0.0.1' });
    expect(share.clients[0]!.bytes).toBe(since.nar.peerBytes);
    const aTable = await run(process.execPath, [CLI, 'stats', '--url', a.url], { timeoutMs: 15_000 });
    expect(aTable.stdout).toContain(`sharing on ${shareUrl}`);
  });

  it("a path A built itself is not served: B's Nix cannot substitute it", async () => {
    const res = await substitute(join(dir, 'b-own'), [own], b.url, { xdgCache: join(dir, 'xdg-own'), trustedKeys: [key.publicKey], timeoutMs: 60_000, extraOptions: ['--option', 'narinfo-cache-negative-ttl', '0'] });
    expect(res.code).not.toBe(0);
    expect(existsSync(join(dir, 'b-own', own))).toBe(false);
    const direct = await fetch(`${shareUrl}${own.slice(11, 43)}.narinfo`);
    expect(direct.status).toBe(404);
  });

  /** `nix-lan-cache doctor --json --url PROXY`, Nix reading a nix.conf that points at that proxy. */
  async function doctor(p: ProxyProcess): Promise<Finding[]> {
    const confDir = join(dir, `doctor-${p.url.split(':').pop()}`);
    await rm(confDir, { recursive: true, force: true });
    await mkdir(confDir, { recursive: true });
    await writeFile(join(confDir, 'nix.conf'), `substituters = ${p.url}\ntrusted-public-keys = ${key.publicKey}\nnarinfo-cache-negative-ttl = 30\n`);
    const env: NodeJS.ProcessEnv = { ...process.env, NIX_CONF_DIR: confDir, NIX_USER_CONF_FILES: join(confDir, 'none.conf'), XDG_CONFIG_HOME: confDir };
    delete env.NIX_CONFIG;
    const res = await run(process.execPath, [CLI, 'doctor', '--json', '--url', p.url], { env, timeoutMs: 30_000 });
    return (JSON.parse(res.stdout) as { findings: Finding[] }).findings;
  }

  it('doctor on A checks the share answers and says what it gives: the signed paths, never the one built here; on B, the peer answers', async () => {
    const onA = await doctor(a);
    expect(onA.find((f) => f.id === 'share-answers')).toMatchObject({ level: 'ok', message: `the share answers at ${shareUrl}` });
    const paths = onA.find((f) => f.id === 'share-paths')!;
    const total = closure.paths.length + 1;
    expect(paths.message).toContain(`gives ${closure.paths.length} of the ${total} paths in ${storeA} (signed ${closure.paths.length} by upstream-1)`);
    expect(paths.message).toContain('the other 1 (built here, unsigned, or signed by keys this proxy does not trust) are never served');
    const onB = await doctor(b);
    expect(onB.find((f) => f.id === 'share-off')?.level).toBe('info');
    expect(onB.find((f) => f.id === 'origin-reachable' && f.message.includes(shareUrl))?.level).toBe('ok');
  });

  it('doctor warns about a share that does not answer on an address, with the fix, and fails on a store it cannot read', async () => {
    const snap = (await (await fetch(`${a.url}/_/share`)).json()) as ShareSnapshot;
    const dead = `http://127.0.0.1:${await freePort()}/`;
    const findings = await checkShare({ ...snap, urls: [dead], store: join(dir, 'no-store') }, [key.publicKey], 1000);
    expect(findings.find((f) => f.id === 'share-unreachable')).toMatchObject({ level: 'warn', message: expect.stringContaining(`the share does not answer at ${dead}`), fix: expect.stringContaining('openFirewall') });
    expect(findings.find((f) => f.id === 'share-store-unreadable')).toMatchObject({ level: 'fail', message: expect.stringContaining('is not a Nix store') });
  });

  it("the status pages: B lists A's share as a peer origin with its hits and bytes; A's shows what it shared, and with whom", async () => {
    const profile = await tempDir('share-chromium');
    const browser = await chromium.launchPersistentContext(profile, {
      executablePath: '/usr/bin/chromium',
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    onTestFinished(async () => {
      await browser.close();
      await removeDir(profile);
    });
    const page = await browser.newPage();
    const open = async (p: ProxyProcess) => {
      await page.goto(`${p.url}/?refresh=60000`);
      await page.waitForFunction(() => document.body.dataset.generatedAt !== undefined, undefined, { timeout: 10_000 });
    };
    await open(b);
    const s = await stats(b);
    const peer = s.origins.find((o) => o.kind === 'peer')!;
    const row = page.locator(`#origins tr[data-origin="${peer.name}"]`);
    expect(await row.locator('td').nth(1).textContent()).toBe('peer');
    expect(await row.locator('[data-field=state]').textContent()).toBe('up');
    expect(Number(await row.locator('[data-field=hits]').getAttribute('data-value'))).toBe(s.periods.sinceInstall.origins[peer.name]!.narinfo.hit);
    expect(Number(await row.locator('[data-field=bytes]').getAttribute('data-value'))).toBe(s.periods.sinceInstall.nar.peerBytes);
    expect(await page.locator('#share').isHidden()).toBe(true);

    await open(a);
    const share = (await (await fetch(`${a.url}/_/share`)).json()) as ShareSnapshot;
    expect(await page.locator('#share').isVisible()).toBe(true);
    expect(await page.locator('#share-summary').textContent()).toContain(`on ${shareUrl} · paths signed by `);
    expect(Number(await page.locator('#share-summary').getAttribute('data-value'))).toBe(share.totals.bytes);
    const client = page.locator('#share-clients tr[data-client="127.0.0.1"]');
    expect(Number(await client.locator('[data-field=bytes]').getAttribute('data-value'))).toBe(share.clients[0]!.bytes);
  });
});
