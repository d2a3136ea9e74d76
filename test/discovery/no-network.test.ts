import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NetLab } from '../helpers/netns.js';
import { Nginx } from '../helpers/nginx.js';
import { buildClosure, generateKey, makeStaticCache, removeDir, substitute, tempDir, type CacheKey, type Closure } from '../helpers/nix.js';
import { NIX_CLIENTS, type NixClient } from '../helpers/nix-clients.js';
import { collectJsonLines, run, runOk, startProcess, stopAll, stopProcess, type LogEntry } from '../helpers/proc.js';
import { announce, CLI, exitCode, serveUntilExit, startProxy, type ProxyProcess } from '../helpers/proxy.js';
import { until } from '../helpers/wait.js';

// The proxy runs here with mDNS ON (its default), which is allowed only inside
// network namespaces this file creates: nothing reaches the machine's interfaces.

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const UNKNOWN = `${'0'.repeat(32)}.narinfo`;
/** For test titles: every Nix each test runs, in turn. */
const ALL = NIX_CLIENTS.map((c) => c.name).join(', ');

interface Poll {
  at: number;
  status: number;
  ms: number;
  err?: string;
}

// Asks `url` every 250 ms for `ms` (bounded by count too), from inside the namespace; one JSON line per answer.
const POLLER = `
const [url, duration] = [process.argv[1], Number(process.argv[2])];
const start = Date.now();
(async () => {
  for (let i = 0; i < 2000 && Date.now() - start < duration; i++) {
    const t0 = performance.now();
    let status = 0, err;
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(5000) });
      status = r.status;
      await r.arrayBuffer();
    } catch (e) { err = String(e.cause?.code ?? e.message); }
    process.stdout.write(JSON.stringify({ at: Date.now() - start, status, ms: performance.now() - t0, err }) + '\\n');
    await new Promise((r) => setTimeout(r, 250));
  }
})();`;

/** Polls from inside `ns` while `during` runs; resolves with every answer once both are done. */
async function pollWhile(ns: string, url: string, ms: number, during: () => Promise<void> = async () => {}): Promise<Poll[]> {
  const polls: Poll[] = [];
  const child = startProcess('ip', ['netns', 'exec', ns, process.execPath, '-e', POLLER, url, String(ms)]);
  collectJsonLines(child.stdout!, polls as unknown as LogEntry[]);
  const killer = setTimeout(() => child.pid && process.kill(child.pid, 'SIGKILL'), ms + 30_000);
  await during();
  await exitCode(child);
  clearTimeout(killer);
  return polls;
}

function expectAlwaysAnswered(polls: Poll[], minCount: number): void {
  expect(polls.length).toBeGreaterThanOrEqual(minCount);
  const bad = polls.filter((p) => p.status !== 404 || p.ms >= 2000);
  expect(bad, JSON.stringify(bad.slice(0, 5))).toEqual([]);
}

describe('no network, and networks that come and go, with mDNS on', () => {
  let dir: string;
  // Named with this process's PID: another run of the suite on the machine has its own.
  const bareNs = `nlc-nonet-${process.pid}-lo`;

  beforeAll(async () => {
    dir = await tempDir('i11-nonet');
    await runOk('ip', ['netns', 'add', bareNs]);
    await runOk('ip', ['-n', bareNs, 'link', 'set', 'lo', 'up']);
  });
  afterAll(async () => {
    await stopAll();
    await run('ip', ['netns', 'del', bareNs]);
    if (dir) await removeDir(dir);
  });

  it('`serve` with its defaults in a namespace with only lo answers for 60 s (narinfo 404 in under 2 s), while an interface with an address and no route appears and goes', async () => {
    const state = join(dir, 'state-lo');
    const started = Date.now();
    // No flags at all: 127.0.0.1:37515 (the namespace's own), mDNS on, cache.nixos.org upstream (unreachable here).
    const child = startProcess('ip', ['netns', 'exec', bareNs, process.execPath, CLI, 'serve'], {
      cwd: ROOT,
      env: { ...process.env, NIX_LAN_CACHE_LOG_FORMAT: 'json', XDG_STATE_HOME: state, STATE_DIRECTORY: '' },
    });
    const logs: LogEntry[] = [];
    collectJsonLines(child.stderr!, logs);
    await until('listening', 15_000, () => {
      if (child.exitCode !== null) throw new Error(`serve exited ${child.exitCode}: ${JSON.stringify(logs.slice(-5))}`);
      return logs.find((l) => l.event === 'listening');
    });
    console.log(`only lo: listening ${Date.now() - started} ms after start`);
    expect(logs).toContainEqual(expect.objectContaining({ event: 'mdns-waiting' }));

    const polls = await pollWhile(bareNs, `http://127.0.0.1:37515/${UNKNOWN}`, 60_000, async () => {
      await new Promise((r) => setTimeout(r, 5000));
      // An interface with an address and no route but its own subnet's: a veth pair, both ends in the namespace.
      await runOk('ip', ['-n', bareNs, 'link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1']);
      await runOk('ip', ['-n', bareNs, 'addr', 'add', '10.231.43.1/24', 'dev', 'v0']);
      await runOk('ip', ['-n', bareNs, 'link', 'set', 'v0', 'up']);
      await runOk('ip', ['-n', bareNs, 'link', 'set', 'v1', 'up']);
      const mark = logs.length;
      await until('mDNS opened a socket on v0', 10_000, () => logs.slice(mark).find((l) => l.event === 'mdns-interfaces' && JSON.stringify(l.interfaces).includes('v0')));
      await new Promise((r) => setTimeout(r, 10_000)); // browse queries go out on v0 meanwhile
      const mark2 = logs.length;
      await runOk('ip', ['-n', bareNs, 'link', 'del', 'v0']);
      await until('mDNS waiting again after v0 went', 10_000, () => logs.slice(mark2).find((l) => l.event === 'mdns-waiting'));
    });
    expect(child.exitCode).toBeNull();
    expectAlwaysAnswered(polls, 100);
    expect(logs.filter((l) => Number(l.level) >= 50)).toEqual([]); // nothing at error or fatal
    console.log(`only lo: ${polls.length} answers in 60 s, slowest ${Math.max(...polls.map((p) => p.ms)).toFixed(0)} ms`);

    await stopProcess(child, 'SIGTERM');
    expect(child.exitCode).toBe(0);
    expect(existsSync(join(state, 'nix-lan-cache', 'stats.json.lock'))).toBe(false);
  });

  it('every mDNS socket error is handled where it arises: port 5353 held without SO_REUSEADDR, an address that vanished before use', async () => {
    const browserModule = join(ROOT, 'dist', 'discovery', 'mdns-browser.js');
    const script = (mode: string) => `
      import dgram from 'node:dgram';
      import { pino } from ${JSON.stringify(join(ROOT, 'node_modules', 'pino', 'pino.js'))};
      import { MdnsServiceBrowser } from ${JSON.stringify(browserModule)};
      const ghost = () => ({ ghost0: [{ address: '10.231.44.9', netmask: '255.255.255.0', family: 'IPv4', mac: '00:00:00:00:00:00', internal: false, cidr: '10.231.44.9/24' }] });
      const start = () => {
        const b = new MdnsServiceBrowser({ log: pino({}, process.stderr), ...(${JSON.stringify(mode)} === 'vanished' ? { networkInterfaces: ghost } : {}) });
        b.start();
        setTimeout(async () => { await b.stop(); console.error(JSON.stringify({ event: 'stopped' })); process.exit(0); }, 5000);
      };
      if (${JSON.stringify(mode)} === 'port-taken') dgram.createSocket('udp4').bind(5353, '0.0.0.0', start); else start();`;
    await runOk('ip', ['-n', bareNs, 'link', 'add', 'v2', 'type', 'veth', 'peer', 'name', 'v3']);
    try {
      await runOk('ip', ['-n', bareNs, 'addr', 'add', '10.231.44.1/24', 'dev', 'v2']);
      await runOk('ip', ['-n', bareNs, 'link', 'set', 'v2', 'up']);
      await runOk('ip', ['-n', bareNs, 'link', 'set', 'v3', 'up']);
      for (const [mode, expected] of [
        ['port-taken', 'mdns-socket-error'],
        ['vanished', 'mdns-send-failed'],
      ] as const) {
        const res = await run('ip', ['netns', 'exec', bareNs, process.execPath, '--input-type=module', '-e', script(mode)], { cwd: ROOT, timeoutMs: 20_000 });
        const logs: LogEntry[] = res.stderr.split('\n').filter(Boolean).map((l) => { try { return JSON.parse(l) as LogEntry; } catch { return { raw: l }; } });
        expect(logs.map((l) => l.event), res.stderr).toContain(expected);
        expect(logs.at(-1)?.event, res.stderr).toBe('stopped');
        expect(res.code).toBe(0);
        if (mode === 'vanished') expect(logs.filter((l) => l.event === 'mdns-send-failed')).toHaveLength(1); // logged once, retried quietly
      }
    } finally {
      await run('ip', ['-n', bareNs, 'link', 'del', 'v2']);
    }
  });

  it('why mdns-js went (docs/dependencies.md): in the same namespace it throws addMembership ENODEV from a socket callback, past any try/catch', async () => {
    const script = `
      const mdns = require('mdns-js');
      try {
        const browser = mdns.createBrowser(mdns.tcp('nix-cache'));
        browser.on('ready', () => browser.discover());
      } catch (err) {
        console.log('caught: ' + err.message);
      }
      setTimeout(() => console.log('still alive'), 3000);`;
    const res = await run('ip', ['netns', 'exec', bareNs, process.execPath, '-e', script], { cwd: ROOT, timeoutMs: 20_000 });
    expect(res.stdout).not.toContain('caught');
    expect(res.stdout).not.toContain('still alive');
    expect(res.stderr).toMatch(/addMembership ENODEV/);
    expect(res.code).not.toBe(0);
  });
});

describe('a laptop whose network comes and goes, with real Nix, nginx and an announced Pi', () => {
  let lab: NetLab;
  let dir: string;
  let closure: Closure;
  let piKey: CacheKey;
  let upstreamKey: CacheKey;
  let pi: Nginx;
  let upstream: Nginx;
  let proxy: ProxyProcess;
  let piUrl: string;
  let laptopAddr: string;
  let n = 0;

  beforeAll(async () => {
    dir = await tempDir('i11-netgo');
    lab = await NetLab.create('i11-netgo', 43, ['laptop', 'pi']);
    laptopAddr = lab.address('laptop');
    closure = await buildClosure(`i11-netgo-${process.pid}`, [
      { name: 'leaf0', size: 30_000 },
      { name: 'leaf1', size: 31_000 },
    ]);
    piKey = await generateKey(dir, 'pi.lan-1');
    upstreamKey = await generateKey(dir, 'upstream-1');
    await Promise.all([makeStaticCache(join(dir, 'pi-cache'), [closure.root], piKey, 'xz'), makeStaticCache(join(dir, 'upstream-cache'), [closure.root], upstreamKey, 'zstd')]);
    for (const d of ['pi-nginx', 'upstream-nginx']) await mkdir(join(dir, d));
    pi = await Nginx.start({ root: join(dir, 'pi-cache'), workDir: join(dir, 'pi-nginx'), port: 8080, host: lab.address('pi'), wrapper: lab.exec('pi') });
    // The upstream is on the laptop's own loopback: reachable whatever its network does.
    upstream = await Nginx.start({ root: join(dir, 'upstream-cache'), workDir: join(dir, 'upstream-nginx'), port: 8081, wrapper: lab.exec('laptop') });
    piUrl = `http://${lab.address('pi')}:8080/`;
    await announce(lab.exec('pi'), ['--port', '8080', '--key-name', 'pi.lan-1', '--name', 'pi', '--host', 'pi.local', '--interface', lab.address('pi')]);
  });

  afterAll(async () => {
    await stopAll();
    await lab?.destroy();
    if (dir) await removeDir(dir);
  });

  const proxyArgs = () => ['--upstream', 'http://127.0.0.1:8081/', '--trusted-public-key', piKey.publicKey, '--trusted-public-key', upstreamKey.publicKey];
  const logged = (event: string, since: number, extra: (l: LogEntry) => boolean = () => true) => proxy.logs.slice(since).find((l) => l.event === event && extra(l));
  const piName = () => `mdns:${new URL(piUrl).host}`;

  /** Real Nix (`client`), a fresh client in the laptop's namespace, through the proxy: which server sent the NARs. */
  async function fetchClosure(client: NixClient): Promise<{ pi: number; upstream: number }> {
    n++;
    const before = await Promise.all([pi.narHits(), upstream.narHits()]);
    const store = join(dir, `client-${n}`);
    const res = await substitute(store, [closure.root], proxy.url, { client, xdgCache: join(dir, `xdg-${n}`), trustedKeys: [piKey.publicKey, upstreamKey.publicKey], wrapper: lab.exec('laptop'), timeoutMs: 60_000 });
    expect(res.code, `${client.name}: ${res.stderr}`).toBe(0);
    expect(closure.paths.every((p) => existsSync(join(store, p))), client.name).toBe(true);
    const after = await Promise.all([pi.narHits(), upstream.narHits()]);
    const [p, u] = after.map((a, i) => a.length - before[i]!.length);
    return { pi: p!, upstream: u! };
  }

  /** Each Nix in turn fetches the closure: every NAR from `from`. */
  async function everyNixFetchesFrom(from: 'pi' | 'upstream'): Promise<void> {
    for (const client of NIX_CLIENTS) {
      expect(await fetchClosure(client), client.name).toEqual({ pi: from === 'pi' ? closure.paths.length : 0, upstream: from === 'upstream' ? closure.paths.length : 0 });
    }
  }

  async function routeAppears(): Promise<void> {
    await runOk('ip', ['-n', lab.ns('laptop'), 'link', 'set', 'eth0', 'up']);
    await run('ip', ['-n', lab.ns('laptop'), 'addr', 'add', `${laptopAddr}/24`, 'dev', 'eth0']);
    await run('ip', ['-n', lab.ns('laptop'), 'route', 'add', '224.0.0.0/4', 'dev', 'eth0']);
  }

  it(`starts with no address and no route: answers at once; when a route appears, the announced Pi is found within 5 s and ${ALL} each get every NAR from it`, async () => {
    await runOk('ip', ['-n', lab.ns('laptop'), 'addr', 'flush', 'dev', 'eth0']);
    await runOk('ip', ['-n', lab.ns('laptop'), 'link', 'set', 'eth0', 'down']);
    proxy = await startProxy(proxyArgs(), { wrapper: lab.exec('laptop') });
    expect(proxy.logs).toContainEqual(expect.objectContaining({ event: 'mdns-waiting' }));
    expectAlwaysAnswered(await pollWhile(lab.ns('laptop'), `${proxy.url}/${UNKNOWN}`, 1000), 2);

    const mark = proxy.logs.length;
    await routeAppears();
    const t0 = Date.now();
    await until('the Pi admitted after the route appeared', 5000, () => logged('discovery-admitted', mark, (l) => l.url === piUrl));
    console.log(`route appeared: Pi admitted after ${Date.now() - t0} ms`);
    await everyNixFetchesFrom('pi');
  });

  it('port already taken with mDNS on: the second proxy exits 1 within a second of the failure and releases its lock', async () => {
    const state = join(dir, 'state-second');
    const port = new URL(proxy.url).port;
    const { code, logs, failedAt, exitedAt } = await serveUntilExit(['--listen', `127.0.0.1:${port}`, ...proxyArgs(), '--state-dir', state], { wrapper: lab.exec('laptop') });
    expect(code).toBe(1);
    expect(String(logs.find((l) => l.event === 'start-failed')?.err)).toMatch(/EADDRINUSE/);
    expect(exitedAt - failedAt).toBeLessThan(1000);
    expect(existsSync(join(state, 'stats.json.lock'))).toBe(false);
    expect(logs.some((l) => l.event === 'discovery-started')).toBe(false); // never browsed
    // The first proxy is untouched.
    expectAlwaysAnswered(await pollWhile(lab.ns('laptop'), `${proxy.url}/${UNKNOWN}`, 500), 1);
  });

  it(`the laptop's link goes down: still answering, and \`nix-store -r\` works from upstream (${ALL}); link up: the Pi is back within 5 s`, async () => {
    const mark = proxy.logs.length;
    const polls = await pollWhile(lab.ns('laptop'), `${proxy.url}/${UNKNOWN}`, 10_000, async () => {
      await lab.link('laptop', 'down');
      // A link that is down is not listed by os.networkInterfaces(): its socket closes and mDNS waits.
      await until('the link change noticed', 5000, () => logged('discovery-network-changed', mark));
      await until('mDNS waiting', 5000, () => logged('mdns-waiting', mark));
      await until("the Pi's circuit open", 10_000, () => logged('origin-state', mark, (l) => l.origin === piName() && l.state === 'open'));
    });
    expect(proxy.child.exitCode).toBeNull();
    expectAlwaysAnswered(polls, 20);
    await everyNixFetchesFrom('upstream');

    const mark2 = proxy.logs.length;
    await lab.link('laptop', 'up');
    const t0 = Date.now();
    await until('the Pi back', 5000, () => logged('origin-state', mark2, (l) => l.origin === piName() && l.state === 'closed') ?? logged('discovery-admitted', mark2, (l) => l.url === piUrl));
    console.log(`link up: Pi in use after ${Date.now() - t0} ms`);
  });

  it(`the laptop's address is removed with the link up: still answering, \`nix-store -r\` works from upstream (${ALL}); back: the Pi is found within 5 s`, async () => {
    const mark = proxy.logs.length;
    const polls = await pollWhile(lab.ns('laptop'), `${proxy.url}/${UNKNOWN}`, 10_000, async () => {
      await runOk('ip', ['-n', lab.ns('laptop'), 'addr', 'del', `${laptopAddr}/24`, 'dev', 'eth0']);
      await until('the proxy noticed', 10_000, () => logged('mdns-waiting', mark));
    });
    expect(proxy.child.exitCode).toBeNull();
    expectAlwaysAnswered(polls, 20);
    await everyNixFetchesFrom('upstream');

    const mark2 = proxy.logs.length;
    await routeAppears();
    const t0 = Date.now();
    await until('the Pi in use again', 5000, () => logged('origin-state', mark2, (l) => l.origin === piName() && l.state === 'closed') ?? logged('discovery-admitted', mark2, (l) => l.url === piUrl));
    console.log(`address back: Pi in use after ${Date.now() - t0} ms`);
    expect(proxy.logs.filter((l) => Number(l.level) >= 50)).toEqual([]);
    await proxy.stop();
    expect(proxy.child.exitCode).toBe(0);
  });
});
