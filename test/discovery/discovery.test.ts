import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { startAvahiPublisher } from '../helpers/avahi.js';
import { NetLab } from '../helpers/netns.js';
import { Nginx } from '../helpers/nginx.js';
import { buildClosure, generateKey, makeStaticCache, removeDir, substitute, tempDir, type CacheKey, type Closure } from '../helpers/nix.js';
import { NIX_CLIENTS, type NixClient } from '../helpers/nix-clients.js';
import { run, startProcess, stopAll, stopProcess } from '../helpers/proc.js';
import { announce, CLI, startProxy, type ProxyProcess } from '../helpers/proxy.js';
import { until } from '../helpers/wait.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const LEAVES = Array.from({ length: 6 }, (_, i) => ({ name: `leaf${i}`, size: 40_000 + i * 1000 }));
type Log = Record<string, unknown>;
/** For test titles: every Nix each test runs, in turn. */
const ALL = NIX_CLIENTS.map((c) => c.name).join(', ');

describe('mDNS discovery across network namespaces, with real Nix, nginx, avahi', () => {
  let lab: NetLab;
  let dir: string;
  let closure: Closure;
  let piKey: CacheKey;
  let upstreamKey: CacheKey;
  let pi: Nginx;
  let upstream: Nginx;
  let spoof: Nginx;
  let trustedKeys: string[];
  let piUrl: string;
  let n = 0;

  beforeAll(async () => {
    dir = await tempDir('discovery');
    lab = await NetLab.create('disc', 42, ['laptop', 'pi', 'spoof']);
    closure = await buildClosure('discovery', LEAVES);
    piKey = await generateKey(dir, 'pi.lan-1');
    upstreamKey = await generateKey(dir, 'upstream-1');
    const evilKey = await generateKey(dir, 'evil-1');
    trustedKeys = [piKey.publicKey, upstreamKey.publicKey];
    await Promise.all([
      makeStaticCache(join(dir, 'pi-cache'), [closure.root], piKey, 'xz'),
      makeStaticCache(join(dir, 'upstream-cache'), [closure.root], upstreamKey, 'zstd'),
      makeStaticCache(join(dir, 'spoof-cache', 'b'), [closure.root], evilKey, 'xz'),
    ]);
    await symlink(join(dir, 'spoof-cache', 'b'), join(dir, 'spoof-cache', 'a'));
    for (const d of ['pi-nginx', 'upstream-nginx', 'spoof-nginx']) await mkdir(join(dir, d));
    pi = await Nginx.start({ root: join(dir, 'pi-cache'), workDir: join(dir, 'pi-nginx'), port: 8080, host: lab.address('pi'), wrapper: lab.exec('pi') });
    upstream = await Nginx.start({ root: join(dir, 'upstream-cache'), workDir: join(dir, 'upstream-nginx'), port: 8081, wrapper: lab.exec('laptop') });
    spoof = await Nginx.start({ root: join(dir, 'spoof-cache'), workDir: join(dir, 'spoof-nginx'), port: 8080, host: lab.address('spoof'), wrapper: lab.exec('spoof') });
    piUrl = `http://${lab.address('pi')}:8080/`;
  });

  afterAll(async () => {
    await stopAll(); // proxies, announcers, avahi, nginx: each by its PID
    await lab?.destroy();
    if (dir) await removeDir(dir);
  });

  const proxyArgs = () => ['--upstream', 'http://127.0.0.1:8081/', '--trusted-public-key', piKey.publicKey, '--trusted-public-key', upstreamKey.publicKey];

  /** Real Nix (`client`) in the laptop's namespace, as a fresh client, through the proxy. */
  async function fetchClosure(proxy: ProxyProcess, client: NixClient) {
    n++;
    const store = join(dir, `client-${n}`);
    const res = await substitute(store, [closure.root], proxy.url, { client, xdgCache: join(dir, `xdg-${n}`), trustedKeys, wrapper: lab.exec('laptop'), timeoutMs: 60_000 });
    expect(res.code, `${client.name}: ${res.stderr}`).toBe(0);
    expect(closure.paths.every((p) => existsSync(join(store, p))), client.name).toBe(true);
    return res;
  }

  /** NAR downloads per server during `fn`. */
  async function narsDuring<T>(fn: () => Promise<T>): Promise<{ result: T; pi: number; upstream: number; spoof: number }> {
    const before = await Promise.all([pi.narHits(), upstream.narHits(), spoof.narHits()]);
    const result = await fn();
    const after = await Promise.all([pi.narHits(), upstream.narHits(), spoof.narHits()]);
    const [p, u, s] = after.map((a, i) => new Set(a.slice(before[i]!.length).map((e) => e.uri)).size);
    return { result, pi: p!, upstream: u!, spoof: s! };
  }

  function logged(proxy: ProxyProcess, event: string, url: string, since = 0): Log | undefined {
    return proxy.logs.slice(since).find((l) => l.event === event && l.url === url);
  }

  async function discoverySnapshot(proxy: ProxyProcess): Promise<{ caches: Array<Record<string, unknown>> }> {
    const script = `fetch(${JSON.stringify(`${proxy.url}/_/discovery`)}).then((r) => r.text()).then((t) => process.stdout.write(t))`;
    const res = await run('ip', [...lab.exec('laptop').slice(1), process.execPath, '-e', script], { timeoutMs: 10_000 });
    return JSON.parse(res.stdout) as { caches: Array<Record<string, unknown>> };
  }

  it(`finds a Pi announced by \`nix-lan-cache announce\` within 3 s; ${ALL} each get every NAR from the Pi`, async () => {
    const announcer = await announce(lab.exec('pi'), ['--port', '8080', '--key-name', 'pi.lan-1', '--priority', '30', '--name', 'pi', '--host', 'pi.local', '--interface', lab.address('pi')]);
    const started = Date.now();
    const proxy = await startProxy(proxyArgs(), { wrapper: lab.exec('laptop') });
    await until('the Pi admitted', 3000 - (Date.now() - started), () => logged(proxy, 'discovery-admitted', piUrl));
    const ms = Date.now() - started;

    for (const [i, client] of NIX_CLIENTS.entries()) {
      const { pi: fromPi, upstream: fromUpstream } = await narsDuring(() => fetchClosure(proxy, client));
      expect(fromPi, client.name).toBe(closure.paths.length);
      expect(fromUpstream, client.name).toBe(0);
      if (i > 0) continue;
      const snap = await discoverySnapshot(proxy);
      expect(snap.caches).toContainEqual(expect.objectContaining({ url: piUrl, status: 'admitted', keyName: 'pi.lan-1', priority: 30, verified: closure.paths.length }));
    }

    // Goodbye: the proxy drops the Pi at once instead of waiting out the TTL.
    const mark = proxy.logs.length;
    const stopped = Date.now();
    await stopProcess(announcer, 'SIGTERM');
    await until('the Pi dropped after its goodbye', 3000, () => logged(proxy, 'discovery-gone', piUrl, mark));
    console.log(`announce: admitted ${ms} ms after the proxy started; dropped ${Date.now() - stopped} ms after goodbye`);
    await proxy.stop();
  });

  it(`finds a Pi announced by Debian avahi-daemon with nix/avahi/nix-cache.service within 3 s; ${ALL} each get every NAR from it`, async () => {
    const xml = (await readFile(join(ROOT, 'nix/avahi/nix-cache.service'), 'utf8')).replace('<port>80</port>', '<port>8080</port>');
    expect(xml).toContain('<port>8080</port>');
    const proxy1 = await startProxy(proxyArgs(), { wrapper: lab.exec('laptop') });
    const started = Date.now();
    const avahi = await startAvahiPublisher(lab.exec('pi'), join(dir, 'avahi-pi'), 'pi-avahi', { 'nix-cache.service': xml });
    // A running proxy hears avahi's announcement …
    await until('the Pi admitted after avahi started', 3000, () => logged(proxy1, 'discovery-admitted', piUrl));
    const heard = Date.now() - started;
    // … and a proxy started afterwards finds it by asking.
    const started2 = Date.now();
    const proxy2 = await startProxy(proxyArgs(), { wrapper: lab.exec('laptop') });
    await until('the Pi admitted by a new proxy', 3000 - (Date.now() - started2), () => logged(proxy2, 'discovery-admitted', piUrl));
    console.log(`avahi: heard ${heard} ms after avahi started; found ${Date.now() - started2} ms after a proxy started`);
    await proxy1.stop();

    for (const client of NIX_CLIENTS) {
      const { pi: fromPi, upstream: fromUpstream } = await narsDuring(() => fetchClosure(proxy2, client));
      expect(fromPi, client.name).toBe(closure.paths.length);
      expect(fromUpstream, client.name).toBe(0);
    }
    await proxy2.stop();
    await stopProcess(avahi);
  });

  /**
   * The tests below share one set-up, made here and not by an earlier test:
   * the Pi announced by avahi, a proxy that admitted it, and how long a fresh
   * client of each Nix takes through it. Each test puts back what it changes
   * (links, addresses, announcers), so they pass in any order and alone.
   * Each runs every Nix in turn under the same conditions.
   */
  describe('with the Pi announced by avahi and a proxy that found it', () => {
    let proxy2: ProxyProcess;
    let avahi: ChildProcess;
    /** By suite: how long that Nix takes for the closure with the Pi. */
    const baselineMs: Record<string, number> = {};

    beforeAll(async () => {
      const xml = (await readFile(join(ROOT, 'nix/avahi/nix-cache.service'), 'utf8')).replace('<port>80</port>', '<port>8080</port>');
      avahi = await startAvahiPublisher(lab.exec('pi'), join(dir, 'avahi-pi-shared'), 'pi-avahi2', { 'nix-cache.service': xml });
      // These tests are about discovery, not hedging: a Pi that answers a narinfo later than the default 200 ms
      // (two test files share 2 cores) must not send lookups to the upstream on loopback, which always wins a race.
      const config = join(dir, 'proxy2.json');
      await writeFile(config, JSON.stringify({ timeouts: { lan: { hedgeMs: 1000 } } }));
      proxy2 = await startProxy([...proxyArgs(), '--config', config], { wrapper: lab.exec('laptop') });
      await until('the Pi admitted', 5000, () => logged(proxy2, 'discovery-admitted', piUrl));
      for (const client of NIX_CLIENTS) {
        const { result, pi: fromPi } = await narsDuring(() => fetchClosure(proxy2, client));
        expect(fromPi, client.name).toBe(closure.paths.length);
        baselineMs[client.suite] = result.ms;
      }
    });
    afterAll(async () => {
      await proxy2?.stop();
      if (avahi) await stopProcess(avahi);
    });


    it(`the Pi link goes down: the closure comes from upstream at most 2 s slower (${ALL}); link up: the Pi is used again within 5 s`, async () => {
      onTestFinished(() => lab.link('pi', 'up'));
      await lab.link('pi', 'down');
      const downMs: string[] = [];
      for (const client of NIX_CLIENTS) {
        const down = await narsDuring(() => fetchClosure(proxy2, client));
        expect(down.upstream, client.name).toBe(closure.paths.length);
        expect(down.pi, client.name).toBe(0);
        expect(down.result.ms - baselineMs[client.suite]!, client.name).toBeLessThan(2000);
        downMs.push(`${client.name} ${down.result.ms.toFixed(0)} ms vs ${baselineMs[client.suite]!.toFixed(0)} ms with the Pi`);
      }

      const mark = proxy2.logs.length;
      await lab.link('pi', 'up');
      const up = Date.now();
      const piName = `mdns:${new URL(piUrl).host}`;
      await until('the Pi back in use', 5000, () =>
        proxy2.logs.slice(mark).find((l) => (l.event === 'origin-state' && l.origin === piName && l.state === 'closed') || (l.event === 'discovery-admitted' && l.url === piUrl)),
      );
      const back = Date.now() - up;
      for (const client of NIX_CLIENTS) {
        const again = await narsDuring(() => fetchClosure(proxy2, client));
        expect(again.pi, client.name).toBe(closure.paths.length);
        expect(again.upstream, client.name).toBe(0);
      }
      console.log(`link down: ${downMs.join('; ')}; Pi usable again ${back} ms after link up`);
    });

    it(`spoofed announcements (untrusted key; trusted key name but other signatures) are refused and logged; the Pi and upstream are unaffected (${ALL})`, async () => {
      const spoofAddr = lab.address('spoof');
      const urlA = `http://${spoofAddr}:8080/a/`;
      const urlB = `http://${spoofAddr}:8080/b/`;
      const mark = proxy2.logs.length;
      const spoofA = await announce(lab.exec('spoof'), ['--port', '8080', '--path', '/a/', '--key-name', 'evil-1', '--priority', '1', '--name', 'evil a', '--host', 'evil-a.local', '--interface', spoofAddr]);
      const spoofB = await announce(lab.exec('spoof'), ['--port', '8080', '--path', '/b/', '--key-name', 'pi.lan-1', '--priority', '1', '--name', 'evil b', '--host', 'evil-b.local', '--interface', spoofAddr]);
      onTestFinished(async () => {
        await stopProcess(spoofA);
        await stopProcess(spoofB);
      });
      const refusedA = await until('spoof A refused', 5000, () => logged(proxy2, 'discovery-refused', urlA, mark));
      expect(String(refusedA.reason)).toMatch(/"evil-1" is not one of the trusted keys/);
      // B claims the Pi's key name and has a working nix-cache-info: admitted, on probation.
      await until('spoof B admitted', 5000, () => logged(proxy2, 'discovery-admitted', urlB, mark));

      for (const client of NIX_CLIENTS) {
        const withSpoofs = await narsDuring(() => fetchClosure(proxy2, client));
        expect(withSpoofs.pi, client.name).toBe(closure.paths.length);
        expect(withSpoofs.spoof, client.name).toBe(0);
        expect(withSpoofs.upstream, client.name).toBe(0);
        expect(withSpoofs.result.ms - baselineMs[client.suite]!, client.name).toBeLessThan(1000);
      }
      const refusedB = logged(proxy2, 'discovery-refused', urlB, mark);
      expect(String(refusedB?.reason)).toMatch(/without a valid signature by pi\.lan-1/);
      expect(proxy2.logs.slice(mark).some((l) => l.event === 'untrusted-narinfo')).toBe(true);
      // The spoof saw at most the one narinfo request that gave it away.
      const spoofNarinfos = (await spoof.log()).filter((e) => e.uri.endsWith('.narinfo'));
      expect(spoofNarinfos.length).toBeLessThanOrEqual(2);

      // Away from the Pi, with the spoofs still on the network: upstream serves everything.
      await lab.link('pi', 'down');
      try {
        for (const client of NIX_CLIENTS) {
          const away = await narsDuring(() => fetchClosure(proxy2, client));
          expect(away.upstream, client.name).toBe(closure.paths.length);
          expect(away.spoof, client.name).toBe(0);
          expect(away.result.ms - baselineMs[client.suite]!, client.name).toBeLessThan(2000);
        }
      } finally {
        await lab.link('pi', 'up');
      }

      const snap = await discoverySnapshot(proxy2);
      expect(snap.caches).toContainEqual(expect.objectContaining({ url: urlA, status: 'refused', keyName: 'evil-1' }));
      expect(snap.caches).toContainEqual(expect.objectContaining({ url: urlB, status: 'refused', keyName: 'pi.lan-1' }));
      expect(snap.caches).toContainEqual(expect.objectContaining({ url: piUrl, keyName: 'pi.lan-1' }));

      // `nix-lan-cache stats` shows the same: which caches were found and why one was refused.
      const [cmd, ...pre] = lab.exec('laptop');
      const table = await run(cmd!, [...pre, process.execPath, CLI, 'stats', '--url', proxy2.url], { timeoutMs: 15_000 });
      expect(table.code, table.stderr).toBe(0);
      const lineA = table.stdout.split('\n').find((l) => l.startsWith(urlA));
      expect(lineA).toMatch(/evil-1\s+refused\s.*"evil-1" is not one of the trusted keys/);
      expect(table.stdout.split('\n').find((l) => l.startsWith(urlB))).toMatch(/pi\.lan-1\s+refused\s.*without a valid signature by pi\.lan-1/);
    });

    it(`the laptop gets a new address: the proxy notices, rebinds its mDNS sockets and still hears announcements; ${ALL} still get the Pi`, async () => {
      const mark = proxy2.logs.length;
      await run('ip', ['-n', lab.ns('laptop'), 'addr', 'add', `10.231.42.200/24`, 'dev', 'eth0']);
      onTestFinished(async () => {
        await run('ip', ['-n', lab.ns('laptop'), 'addr', 'del', `10.231.42.200/24`, 'dev', 'eth0']);
      });
      await until('the network change noticed', 5000, () => proxy2.logs.slice(mark).find((l) => l.event === 'discovery-network-changed'));
      const late = `http://${lab.address('spoof')}:8080/c/`;
      const lateAnnouncer = await announce(lab.exec('spoof'), ['--port', '8080', '--path', '/c/', '--key-name', 'late-1', '--name', 'late', '--host', 'late.local', '--interface', lab.address('spoof')]);
      const refused = await until('the late announcement heard', 5000, () => logged(proxy2, 'discovery-refused', late, mark));
      expect(String(refused.reason)).toMatch(/"late-1" is not one of the trusted keys/);
      // The Pi stays in use.
      for (const client of NIX_CLIENTS) {
        const after = await narsDuring(() => fetchClosure(proxy2, client));
        expect(after.pi, client.name).toBe(closure.paths.length);
      }
      await stopProcess(lateAnnouncer);
    });
    it('a Pi that loses power (no goodbye) is dropped when its announcement\'s TTL runs out', async () => {
      // A raw mDNS responder (multicast-dns) for the real Pi nginx under another path, with 2 s TTLs.
      await symlink(join(dir, 'pi-cache'), join(dir, 'pi-cache', 'ttl'));
      const addr = lab.address('pi');
      const url = `http://${addr}:8080/ttl/`;
      const responder = `
        const mdns = require('multicast-dns')({ interface: ${JSON.stringify(addr)}, bind: '0.0.0.0' });
        const name = 'ttl-pi._nix-cache._tcp.local';
        const answers = [
          { name: '_nix-cache._tcp.local', type: 'PTR', ttl: 2, data: name },
          { name, type: 'SRV', ttl: 2, data: { port: 8080, target: 'ttl-pi.local' } },
          { name, type: 'TXT', ttl: 2, data: ['path=/ttl/', 'key=pi.lan-1'] },
          { name: 'ttl-pi.local', type: 'A', ttl: 2, data: ${JSON.stringify(addr)} },
        ];
        mdns.on('query', (q) => { if (q.questions.some((x) => x.name.toLowerCase() === '_nix-cache._tcp.local')) mdns.respond({ answers }); });
        mdns.respond({ answers });
        setInterval(() => mdns.respond({ answers }), 1000);`;
      const [cmd, ...pre] = lab.exec('pi');
      const child = startProcess(cmd!, [...pre, process.execPath, '-e', responder], { cwd: ROOT });
      let err = '';
      child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
      const mark = proxy2.logs.length;
      await until('the TTL-announced Pi admitted', 5000, () => logged(proxy2, 'discovery-admitted', url, mark)).catch((e) => {
        console.log(JSON.stringify(proxy2.logs.slice(mark).filter((l) => String(l.event ?? '').startsWith('discovery') || l.component === 'mdns'), null, 1), child.exitCode, err);
        throw e;
      });
      await stopProcess(child, 'SIGKILL'); // gone without a word
      const killedAt = Date.now();
      const gone = await until('the TTL-announced Pi dropped', 8000, () => logged(proxy2, 'discovery-gone', url, mark) ?? logged(proxy2, 'discovery-lost', url, mark));
      expect(Date.now() - killedAt).toBeLessThan(5000); // 2 s TTL, plus the browser's tick
      expect(String(gone.reason)).toMatch(/expired|goodbye|not answering/);
      const snap = await discoverySnapshot(proxy2);
      expect(snap.caches.find((c) => c.url === url)?.status).toMatch(/gone|lost/);
    });
  });
});
