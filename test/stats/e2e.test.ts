import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type BrowserContext } from 'playwright-core';
import { household, type Household } from '../helpers/scenario.js';
import { startProxy, CLI, type ProxyProcess } from '../helpers/proxy.js';
import { run, stopAll } from '../helpers/proc.js';
import { removeDir, tempDir } from '../helpers/nix.js';
import { NIX_CLIENTS } from '../helpers/nix-clients.js';
import type { AccessLogEntry, Nginx } from '../helpers/nginx.js';
import { parseNarInfo } from '../../src/protocol/narinfo.js';
import { parsePrometheus } from '../../src/stats/prometheus.js';
import type { StatsResponse } from '../../src/api.js';
import { formatBytes } from '../../src/format.js';

const LEAVES = Array.from({ length: 4 }, (_, i) => ({ name: `leaf${i}`, size: 30_000 + i * 7000 }));
const FLUSH = { NIX_LAN_CACHE_STATS_FLUSH_MS: '100' };

async function getStats(url: string): Promise<StatsResponse> {
  const res = await fetch(`${url}/_/stats`);
  expect(res.status).toBe(200);
  return (await res.json()) as StatsResponse;
}
async function getMetrics(url: string) {
  const res = await fetch(`${url}/metrics`);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return parsePrometheus(await res.text());
}

/** `/nar/<file>` → NarSize, from a static cache's narinfos: the bytes Nix gets for that file (uncompressed). */
async function narSizes(dir: string): Promise<Map<string, number>> {
  const sizes = new Map<string, number>();
  for (const name of (await readdir(dir)).filter((n) => n.endsWith('.narinfo'))) {
    const info = parseNarInfo(await readFile(join(dir, name), 'utf8'));
    sizes.set(`/${info.url}`, info.narSize);
  }
  return sizes;
}

/** What nginx says it served: narinfo GETs by status, NAR responses (2xx) and the NAR bytes they carried to Nix. */
function served(log: AccessLogEntry[], sizes: Map<string, number>) {
  const narinfo = log.filter((e) => e.uri.endsWith('.narinfo'));
  const nar = log.filter((e) => e.uri.startsWith('/nar/'));
  const ok = nar.filter((e) => e.status >= 200 && e.status < 300);
  return {
    narinfoRequests: narinfo.length,
    narinfoHits: narinfo.filter((e) => e.status === 200).length,
    narinfoMisses: narinfo.filter((e) => e.status === 404).length,
    narRequests: ok.length,
    narBytes: ok.reduce((a, e) => a + (sizes.get(e.uri) ?? NaN), 0),
    narAbsent: nar.filter((e) => e.status === 404).length,
  };
}

const hostOf = (n: Nginx) => `127.0.0.1:${n.port}`;

describe('stats with real Nix and nginx: Pi up, then Pi down', () => {
  let h: Household;
  let stateDir: string;
  let proxy: ProxyProcess;
  let piDown = false;
  let browser: BrowserContext | undefined;
  let userDataDir: string | undefined;
  // NAR prefetch off: this scenario checks failover accounting (Nix's NAR request meets the Pi gone); with
  // prefetch the proxy's fetch ahead meets it first and Nix's request goes to upstream without a failover.
  // Counters with prefetch on are checked against nginx in test/e2e/prefetch-nix.test.ts.
  const args = () => ['--no-mdns', '--state-dir', stateDir!, '--config', join(h.dir, 'no-nar-prefetch.json'), '--lan', h.pi.url, '--upstream', h.upstream.url, '--trusted-public-key', h.piKey.publicKey, '--trusted-public-key', h.upstreamKey.publicKey];

  beforeAll(async () => {
    h = await household('stats', LEAVES);
    writeFileSync(join(h.dir, 'no-nar-prefetch.json'), JSON.stringify({ cache: { narPrefetchBytes: 0 } }));
  });
  afterAll(async () => {
    await browser?.close();
    await proxy?.stop();
    await stopAll();
    await h?.cleanup();
    if (stateDir) await removeDir(stateDir);
    if (userDataDir) await removeDir(userDataDir);
  });

  // Each Nix with a proxy and stats of its own, from the Pi up to the Pi gone; the last one's go on to the tests below.
  for (const client of NIX_CLIENTS) it(`${client.name}: /_/stats, /metrics and \`stats --json\` agree with each other and with both nginx access logs`, async () => {
    await proxy?.stop();
    if (stateDir) await removeDir(stateDir);
    if (piDown) await h.pi.start();
    piDown = false;
    stateDir = await tempDir(`stats-state-${client.suite}`);
    const p = (proxy = await startProxy(args(), { env: FLUSH }));
    const proxyUrl = p.url;
    const [piMark, upstreamMark] = [(await h.pi.log()).length, (await h.upstream.log()).length];
    const up = await h.fetch(proxyUrl, { client });
    expect(up.code, up.stderr).toBe(0);
    await h.pi.stop(); // the laptop leaves home
    piDown = true;
    const down = await h.fetch(proxyUrl, { client });
    expect(down.code, down.stderr).toBe(0);
    for (const p of h.closure.paths) expect(existsSync(join(down.store, p))).toBe(true);

    const s = await getStats(proxyUrl);
    const pi = served((await h.pi.log()).slice(piMark), await narSizes(h.piDir));
    const upstream = served((await h.upstream.log()).slice(upstreamMark), await narSizes(h.upstreamDir));
    // Sanity: the scenario did what it says: the Pi served the first closure, upstream (part of) the second.
    expect(pi.narRequests).toBe(h.closure.paths.length);
    expect(upstream.narRequests).toBeGreaterThan(0);

    const all = s.periods.sinceInstall;
    for (const [origin, log] of [[hostOf(h.pi), pi], [hostOf(h.upstream), upstream]] as const) {
      const c = all.origins[origin]!;
      expect(c, origin).toBeDefined();
      // Every narinfo request the origin answered is in its access log (refused ones are not: nginx was down).
      expect(c.narinfo.hit + c.narinfo.miss + c.narinfo.untrusted, origin).toBe(log.narinfoRequests);
      expect(c.narinfo.hit, origin).toBe(log.narinfoHits);
      expect(c.narinfo.miss, origin).toBe(log.narinfoMisses);
      expect(c.nar.requests, origin).toBe(log.narRequests);
      expect(c.nar.bytes, origin).toBe(log.narBytes);
      expect(c.nar.absent, origin).toBe(log.narAbsent);
    }
    expect(all.origins[hostOf(h.pi)]!.kind).toBe('lan');
    expect(all.nar.lanBytes).toBe(pi.narBytes);
    expect(all.nar.upstreamBytes).toBe(upstream.narBytes);
    expect(all.bytesKeptOffInternet).toBe(pi.narBytes);
    expect(all.lanHitRate.byBytes).toBeCloseTo(pi.narBytes / (pi.narBytes + upstream.narBytes), 10);
    // The Pi went away mid-session: its circuit is open, the NARs moved to upstream.
    const piStatus = s.origins.find((o) => o.name === hostOf(h.pi))!;
    expect(piStatus.state).toBe('down');
    expect(piStatus.downsSinceInstall).toBeGreaterThanOrEqual(1);
    expect(all.failovers).toBeGreaterThan(0);
    expect(s.recentFallbacks.some((f) => f.what === 'nar' && f.from === hostOf(h.pi) && f.to === hostOf(h.upstream))).toBe(true);

    // What Nix asked the proxy: the proxy's own request log (debug) against the client counters.
    const reqs = p.logs.filter((l) => l.msg === 'request' && typeof l.url === 'string' && (l.url as string).endsWith('.narinfo'));
    expect(all.client.narinfoFound).toBe(reqs.filter((l) => l.status === 200).length);
    expect(all.client.narinfoMissing + all.client.narinfoUnavailable).toBe(reqs.filter((l) => l.status === 404).length);
    expect(all.client.narinfoFromLan + all.client.narinfoFromUpstream).toBe(all.client.narinfoFound);
    // Today and last 7 days hold the same as since install on the first day.
    expect(s.periods.today.nar).toEqual(all.nar);
    expect(s.periods.last7Days.nar).toEqual(all.nar);

    // /metrics says the same.
    const m = await getMetrics(proxyUrl);
    const metric = (name: string, labels: Record<string, string>) =>
      m.filter((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v)).reduce((a, x) => a + x.value, 0);
    for (const origin of [hostOf(h.pi), hostOf(h.upstream)]) {
      const c = all.origins[origin]!;
      expect(metric('nix_lan_cache_nar_bytes_total', { origin })).toBe(c.nar.bytes);
      expect(metric('nix_lan_cache_nar_requests_total', { origin })).toBe(c.nar.requests);
      for (const outcome of ['hit', 'miss', 'error', 'timeout', 'skipped', 'untrusted'] as const) {
        expect(metric('nix_lan_cache_narinfo_requests_total', { origin, outcome }), `${origin} ${outcome}`).toBe(c.narinfo[outcome]);
      }
      const st = s.origins.find((o) => o.name === origin)!;
      expect(metric('nix_lan_cache_narinfo_lookup_duration_seconds_count', { origin })).toBe(st.latency.count);
    }
    expect(metric('nix_lan_cache_origin_up', { origin: hostOf(h.pi) })).toBe(0);
    expect(metric('nix_lan_cache_origin_up', { origin: hostOf(h.upstream) })).toBe(1);
    expect(metric('nix_lan_cache_bytes_kept_off_internet_total', {})).toBe(pi.narBytes);
    expect(metric('nix_lan_cache_client_narinfo_requests_total', { result: 'found' })).toBe(all.client.narinfoFound);

    // `stats --json` and the table.
    const json = await run(process.execPath, [CLI, 'stats', '--url', proxyUrl, '--json']);
    expect(json.code, json.stderr).toBe(0);
    const viaCli = JSON.parse(json.stdout) as StatsResponse;
    expect(viaCli.periods).toEqual(s.periods);
    expect(viaCli.origins.map((o) => [o.name, o.state])).toEqual(s.origins.map((o) => [o.name, o.state]));
    const table = await run(process.execPath, [CLI, 'stats', '--url', proxyUrl]);
    expect(table.code, table.stderr).toBe(0);
    const pct = `${((pi.narBytes / (pi.narBytes + upstream.narBytes)) * 100).toFixed(1)}%`;
    expect(table.stdout).toContain(pct);
    const piRow = table.stdout.split('\n').find((l) => l.startsWith(hostOf(h.pi)))!;
    expect(piRow).toMatch(/\blan\s+down\b/);
    expect(piRow).toContain(formatBytes(pi.narBytes));
    const upRow = table.stdout.split('\n').find((l) => l.startsWith(hostOf(h.upstream)))!;
    expect(upRow).toMatch(/\bupstream\s+up\b/);
    expect(upRow).toContain(formatBytes(upstream.narBytes));
  });

  it(`counters survive a restart (SIGTERM) and a kill -9, with traffic from ${NIX_CLIENTS.map((c) => c.name).join(', ')} between`, async () => {
    const before = await getStats(proxy.url);
    await proxy.stop('SIGTERM');
    proxy = await startProxy(args(), { env: FLUSH });
    const afterRestart = await getStats(proxy.url);
    expect(afterRestart.installedAt).toBe(before.installedAt);
    expect(afterRestart.periods.sinceInstall).toEqual(before.periods.sinceInstall);
    expect(afterRestart.recentFallbacks).toEqual(before.recentFallbacks);
    expect(afterRestart.startedAt).not.toBe(before.startedAt);

    // More traffic from each Nix (Pi still down: all upstream), then kill -9 once it is on disk.
    for (const client of NIX_CLIENTS) {
      const res = await h.fetch(proxy.url, { client });
      expect(res.code, `${client.name}: ${res.stderr}`).toBe(0);
    }
    const live = await getStats(proxy.url);
    expect(live.periods.sinceInstall.nar.upstreamBytes).toBeGreaterThan(before.periods.sinceInstall.nar.upstreamBytes);
    const file = join(stateDir, 'stats.json');
    let onDisk: unknown;
    for (let i = 0; i < 100; i++) {
      onDisk = JSON.parse(readFileSync(file, 'utf8')).total;
      if (JSON.stringify(onDisk) === JSON.stringify(live.periods.sinceInstall.origins) || isSame(onDisk, live)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(isSame(onDisk, live)).toBe(true);
    await proxy.stop('SIGKILL');
    expect(existsSync(`${file}.lock`)).toBe(true); // left behind by the killed process
    proxy = await startProxy(args(), { env: FLUSH });
    const afterKill = await getStats(proxy.url);
    expect(afterKill.installedAt).toBe(before.installedAt);
    expect(afterKill.periods.sinceInstall).toEqual(live.periods.sinceInstall);
    // The restarted proxy saves again (FLUSH makes it save often); once it has, no temporary file of that save is left.
    let savedAt: string | null = null;
    for (let i = 0; i < 100 && !savedAt; i++) {
      savedAt = (await getStats(proxy.url)).persistence.lastSavedAt;
      if (!savedAt) await new Promise((r) => setTimeout(r, 50));
    }
    expect(savedAt).not.toBeNull();
    expect(Date.parse(savedAt!)).toBeGreaterThan(Date.parse(afterKill.startedAt));
    expect(readdirSync(stateDir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('the status page renders in headless Chromium and shows what /_/stats says', async () => {
    // This proxy process has not asked the (stopped) Pi yet; one narinfo request finds it down.
    expect((await fetch(`${proxy.url}/${'0'.repeat(32)}.narinfo`)).status).toBe(404);
    expect((await getStats(proxy.url)).origins.find((o) => o.name === hostOf(h.pi))!.state).toBe('down');
    userDataDir = await tempDir('chromium-profile');
    // A fresh profile directory (playwright passes it as --user-data-dir).
    browser = await chromium.launchPersistentContext(userDataDir, {
      executablePath: '/usr/bin/chromium',
      headless: true,
      viewport: { width: 1280, height: 1000 },
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    const page = await browser.newPage();
    const external: string[] = [];
    page.on('request', (r) => {
      if (!r.url().startsWith(proxy.url)) external.push(r.url());
    });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${proxy.url}/?refresh=1000`);
    await page.waitForFunction(() => document.body.dataset.generatedAt !== undefined, undefined, { timeout: 10_000 });
    const s = await getStats(proxy.url);
    const all = s.periods.sinceInstall;
    const shot = join(h.dir, 'status.png');
    await page.screenshot({ path: shot, fullPage: true });
    expect(readFileSync(shot).length).toBeGreaterThan(10_000);
    if (process.env.NLC_KEEP_SCREENSHOT) await import('node:fs/promises').then((fs) => fs.copyFile(shot, process.env.NLC_KEEP_SCREENSHOT!));

    const text = (id: string) => page.locator(`#${id}`).textContent();
    const value = (id: string) => page.locator(`#${id}`).getAttribute('data-value');
    expect(await text('rate-install')).toBe(`${(all.lanHitRate.byBytes! * 100).toFixed(1)}%`);
    expect(Number(await value('bytes-kept'))).toBe(all.bytesKeptOffInternet);
    expect(await text('bytes-kept')).toBe(formatBytes(all.bytesKeptOffInternet));
    expect(Number(await value('bytes-upstream'))).toBe(all.nar.upstreamBytes);
    expect(Number(await value('narinfo-requests'))).toBe(all.client.narinfoRequests);
    for (const o of s.origins) {
      const row = page.locator(`#origins tr[data-origin="${o.name}"]`);
      expect(await row.locator('[data-field=state]').textContent()).toBe(o.state);
      expect(Number(await row.locator('[data-field=bytes]').getAttribute('data-value'))).toBe(all.origins[o.name]?.nar.bytes ?? 0);
    }
    expect(await page.locator('#origins tr[data-origin] .badge.down').count()).toBe(1);
    expect(await page.locator('#fallbacks li[data-what=nar]').count()).toBe(Math.min(20, s.recentFallbacks.slice(0, 20).filter((f) => f.what === 'nar').length));
    expect(await page.locator('#fallbacks li').count()).toBeGreaterThan(0);

    // Each chart drew something: pixels in the colours it uses (LAN green, upstream blue, down red).
    const pixels = await page.evaluate(() => {
      const count = (id: string, rgb: [number, number, number]) => {
        const c = document.getElementById(id) as HTMLCanvasElement;
        const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i]! - rgb[0]) < 8 && Math.abs(d[i + 1]! - rgb[1]) < 8 && Math.abs(d[i + 2]! - rgb[2]) < 8 && d[i + 3]! > 200) n++;
        return n;
      };
      const green: [number, number, number] = [0x2e, 0x7d, 0x32];
      const blue: [number, number, number] = [0x15, 0x65, 0xc0];
      const red: [number, number, number] = [0xc6, 0x28, 0x28];
      return {
        bytesGreen: count('chart-bytes', green),
        bytesBlue: count('chart-bytes', blue),
        rateGreen: count('chart-rate', green),
        rateBlue: count('chart-rate', blue),
        healthGreen: count('chart-health', green),
        healthRed: count('chart-health', red),
      };
    });
    expect(pixels.bytesGreen).toBeGreaterThan(50);
    expect(pixels.bytesBlue).toBeGreaterThan(50);
    expect(pixels.rateGreen).toBeGreaterThan(20);
    expect(pixels.rateBlue).toBeGreaterThan(20);
    expect(pixels.healthGreen).toBeGreaterThan(200); // upstream up
    expect(pixels.healthRed).toBeGreaterThan(200); // the Pi down
    // The bars are in proportion: LAN vs upstream pixels in the bytes chart follow the byte counts (bar width is linear).
    const ratio = pixels.bytesGreen / pixels.bytesBlue;
    const expected = all.nar.lanBytes / all.nar.upstreamBytes;
    expect(Math.abs(Math.log(ratio / expected))).toBeLessThan(0.25);

    // The page follows the proxy: the Pi comes back, the next poll turns its badge green.
    await h.pi.start();
    for (let i = 0; i < 100 && (await getStats(proxy.url)).origins.find((o) => o.name === hostOf(h.pi))!.state !== 'up'; i++) await new Promise((r) => setTimeout(r, 100));
    await page.waitForFunction((name) => document.querySelector(`#origins tr[data-origin="${name}"] .badge`)?.textContent === 'up', hostOf(h.pi), { timeout: 10_000 });
    expect(errors).toEqual([]);
    expect(external).toEqual([]);
  });
});

function isSame(onDisk: unknown, live: StatsResponse): boolean {
  const total = onDisk as { origins: Record<string, unknown> } | undefined;
  return JSON.stringify(total?.origins) === JSON.stringify(live.periods.sinceInstall.origins);
}
