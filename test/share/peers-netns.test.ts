import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import type { ShareSnapshot, StatsResponse } from '../../src/api.js';
import { avahiBrowse, startAvahiPublisher, killBrowseDaemons } from '../helpers/avahi.js';
import { addUnsigned, substituteInto } from '../helpers/laptop-store.js';
import { NetLab } from '../helpers/netns.js';
import { Nginx } from '../helpers/nginx.js';
import { NIX_CLIENTS } from '../helpers/nix-clients.js';
import { buildClosure, buildPath, generateKey, makeStaticCache, nixEnv, removeDir, substitute, tempDir, type CacheKey, type Closure } from '../helpers/nix.js';
import { run, runOk, startProcess, stopAll, stopProcess } from '../helpers/proc.js';
import { startProxy, type ProxyProcess } from '../helpers/proxy.js';
import { until } from '../helpers/wait.js';

const LEAVES = Array.from({ length: 6 }, (_, i) => ({ name: `leaf${i}`, size: 20_000 + i * 9000 }));
const BIG = 8 * 1024 * 1024;
type Log = Record<string, unknown>;

/**
 * Two laptops and no Pi, in network namespaces joined by veth (a LAN of
 * their own), each with its own Nix store, both running `serve --share`
 * with mDNS on. Laptop A holds a closure it got from the upstream (so it
 * carries the upstream's signature) and a path it built itself; laptop B's
 * upstream is blackholed (a port on B's loopback that accepts and never
 * answers). Real Nix on B, every version, substitutes through B's proxy.
 */
describe('a house without a Pi: laptops serve each other what they hold (namespaces, mDNS, real Nix)', () => {
  let lab: NetLab;
  let dir: string;
  let closure: Closure;
  let big: Closure;
  let own: string;
  let upstreamKey: CacheKey;
  let storeA: string;
  let storeB: string;
  let a: ProxyProcess | undefined;
  let b: ProxyProcess;
  let blackhole: ChildProcess | undefined;
  let upstream: Nginx | undefined;
  let aUrl: string;
  let bUrl: string;
  let n = 0;
  const daemonPids: number[] = [];

  beforeAll(async () => {
    dir = await tempDir('peers-netns');
    lab = await NetLab.create('peers', 44, ['a', 'b', 'spoof']);
    aUrl = `http://${lab.address('a')}:37517/`;
    bUrl = `http://${lab.address('b')}:37517/`;
    [closure, big, own] = await Promise.all([
      buildClosure('peers-netns', LEAVES),
      buildClosure('peers-netns-big', [{ name: 'big', size: BIG }]),
      buildPath('peers-netns', 'built-on-a', '/bin/echo built by laptop a > $out'),
    ]);
    upstreamKey = await generateKey(dir, 'upstream-1');
    await makeStaticCache(join(dir, 'upstream-cache'), [closure.root, big.root], upstreamKey, 'zstd');
    storeA = join(dir, 'a-store');
    storeB = join(dir, 'b-store');
    await substituteInto(storeA, [closure.root, big.root], join(dir, 'upstream-cache'), upstreamKey);
    await addUnsigned(storeA, [own]);
    await runOk('nix-store', ['--store', storeB, '--init'], { env: nixEnv() });
    await mkdir(join(dir, 'upstream-nginx'));
    await blackholeUpstream();
    // B's silent upstream: waited on 3 s, not 15, and probed twice a second once it answers.
    // NARs above 4 MiB are not fetched ahead, so the big NAR is streamed to Nix as it comes.
    await writeFile(join(dir, 'b.json'), JSON.stringify({ timeouts: { upstream: { firstByteMs: 3000, probeIntervalMs: 500 } }, cache: { narPrefetchBytes: 4 * 1024 * 1024 } }));
    b = await startProxy(['--config', join(dir, 'b.json'), '--share', '--share-store', storeB, '--upstream', 'http://127.0.0.1:8081/', '--trusted-public-key', upstreamKey.publicKey], { wrapper: lab.exec('b') });
  });

  afterAll(async () => {
    await stopAll(); // proxies, blackhole, avahi, nginx: each by its PID
    killBrowseDaemons(daemonPids);
    await lab?.destroy();
    if (dir) await removeDir(dir);
  });

  /** B's upstream as a port that accepts and never answers. */
  async function blackholeUpstream(): Promise<void> {
    await upstream?.stop();
    upstream = undefined;
    const [cmd, ...pre] = lab.exec('b');
    const script = "require('net').createServer((s) => s.on('error', () => {})).listen(8081, '127.0.0.1', () => console.log('ready'))";
    const hole = startProcess(cmd!, [...pre, process.execPath, '-e', script]);
    let out = '';
    hole.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    await until('the blackhole listening', 10_000, () => out.includes('ready'));
    blackhole = hole;
  }

  /** B's upstream answers: real nginx with the upstream's cache on the same port. */
  async function upstreamAnswers(): Promise<void> {
    if (blackhole) await stopProcess(blackhole);
    blackhole = undefined;
    upstream = await Nginx.start({ root: join(dir, 'upstream-cache'), workDir: join(dir, 'upstream-nginx'), port: 8081, wrapper: lab.exec('b') });
  }

  async function startA(config?: object): Promise<ProxyProcess> {
    const args = ['--share', '--share-store', storeA, '--upstream', 'http://127.0.0.1:9/', '--trusted-public-key', upstreamKey.publicKey];
    if (config) {
      await writeFile(join(dir, 'a.json'), JSON.stringify(config));
      args.push('--config', join(dir, 'a.json'));
    }
    a = await startProxy(args, { wrapper: lab.exec('a') });
    return a;
  }

  function logged(p: ProxyProcess, event: string, url: string, since = 0): Log | undefined {
    return p.logs.slice(since).find((l) => l.event === event && l.url === url);
  }

  /** A proxy's JSON endpoint, fetched inside its namespace. */
  async function getJson<T>(host: 'a' | 'b' | 'spoof', url: string): Promise<T> {
    const script = `fetch(${JSON.stringify(url)}).then((r) => r.text()).then((t) => process.stdout.write(t))`;
    const res = await run('ip', [...lab.exec(host).slice(1), process.execPath, '-e', script], { timeoutMs: 10_000 });
    return JSON.parse(res.stdout) as T;
  }

  /** A is running and B uses it. */
  async function withA(): Promise<ProxyProcess> {
    if (a && a.child.exitCode === null && a.child.signalCode === null) return a;
    const mark = b.logs.length;
    const started = await startA();
    await until('B admitted A', 10_000, () => logged(b, 'discovery-admitted', aUrl, mark));
    return started;
  }

  /** Real Nix on B, a fresh store and narinfo cache each time. */
  async function fetchOnB(paths: string[], client = NIX_CLIENTS[0]!, timeoutMs = 90_000) {
    n++;
    const store = join(dir, `b-client-${n}`);
    const res = await substitute(store, paths, b.url, { client, xdgCache: join(dir, `xdg-${n}`), trustedKeys: [upstreamKey.publicKey], wrapper: lab.exec('b'), timeoutMs });
    return { ...res, store };
  }

  it('mDNS: B finds A within 5 s of A starting; neither takes its own share for a peer; avahi-browse reads A\'s announcement intact', async () => {
    const mark = b.logs.length;
    const started = Date.now();
    await startA();
    await until('B admitted A', 5000, () => logged(b, 'discovery-admitted', aUrl, mark));
    const ms = Date.now() - started;
    const admitted = logged(b, 'discovery-admitted', aUrl, mark)!;
    expect(String(admitted.reason)).toMatch(/keys cache\.nixos\.org-1, upstream-1 are trusted; narinfos must be signed by one of them/);
    // Each hears its own announcement, and never admits it.
    await until('A heard B', 5000, () => logged(a!, 'discovery-admitted', bUrl));
    expect(b.logs.some((l) => String(l.event).startsWith('discovery-') && l.url === bUrl)).toBe(false);
    expect(a!.logs.some((l) => String(l.event).startsWith('discovery-') && l.url === aUrl)).toBe(false);
    const snap = await getJson<{ peers: { caches: Array<Record<string, unknown>> } }>('b', `${b.url}/_/discovery`);
    expect(snap.peers.caches).toEqual([expect.objectContaining({ url: aUrl, status: 'admitted', keyName: 'cache.nixos.org-1,upstream-1' })]);

    const { services, output } = await avahiBrowse(lab.exec('spoof'), join(dir, 'browse'), 'spoof-browse', '_nix-peer._tcp', daemonPids);
    const seen = services.find((s) => s.address === lab.address('a'));
    expect(seen, output).toBeDefined();
    expect(seen!.port).toBe(37517);
    expect([...seen!.txt].sort()).toEqual(['keys=cache.nixos.org-1,upstream-1', 'path=/', 'v=1']);
    console.log(`mDNS: B admitted A's share ${ms} ms after A started`);
  });

  it("A's share listens on its private LAN addresses only, as they come and go: never loopback, never a public address; each is announced", async () => {
    await withA();
    const started = a!.logs.find((l) => l.event === 'share-started')!;
    expect(started.urls).toEqual([aUrl]);
    const extra = '10.231.44.50';
    const extraUrl = `http://${extra}:37517/`;
    const publicAddress = '203.0.113.7'; // TEST-NET-3: stands for a public address, inside A's namespace only
    const ipA = (...args: string[]) => runOk('ip', ['-n', lab.ns('a'), ...args]);
    onTestFinished(async () => {
      await run('ip', ['-n', lab.ns('a'), 'addr', 'del', `${publicAddress}/24`, 'dev', 'eth0']);
      await run('ip', ['-n', lab.ns('a'), 'addr', 'del', `${extra}/24`, 'dev', 'eth0']);
    });
    const markA = a!.logs.length;
    const markB = b.logs.length;
    await ipA('addr', 'add', `${publicAddress}/24`, 'dev', 'eth0');
    await ipA('addr', 'add', `${extra}/24`, 'dev', 'eth0');
    await until('A listening on the new private address', 5000, () => a!.logs.slice(markA).some((l) => l.event === 'share-listening' && l.url === extraUrl));
    await until('B admitted the new address', 5000, () => logged(b, 'discovery-admitted', extraUrl, markB));
    expect(a!.logs.slice(markA).filter((l) => l.event === 'share-listening').map((l) => l.url)).toEqual([extraUrl]);
    // Inside A's namespace, nothing answers on loopback or on the public address at the share's port.
    const connect = async (host: string) => {
      const script = `require('net').connect(37517, ${JSON.stringify(host)}).on('connect', function () { process.stdout.write('open'); this.destroy(); }).on('error', (e) => process.stdout.write(e.code))`;
      return (await run('ip', [...lab.exec('a').slice(1), process.execPath, '-e', script], { timeoutMs: 10_000 })).stdout;
    };
    expect(await connect('127.0.0.1')).toBe('ECONNREFUSED');
    expect(await connect(publicAddress)).toBe('ECONNREFUSED');
    expect(await connect(extra)).toBe('open');
    // The address goes: the share stops there, the rest goes on.
    await ipA('addr', 'del', `${extra}/24`, 'dev', 'eth0');
    await until('A stopped on the removed address', 5000, () => a!.logs.slice(markA).some((l) => l.event === 'share-stopped' && l.address === extra));
    const share = await getJson<ShareSnapshot>('a', `${a!.url}/_/share`);
    expect(share.urls).toEqual([aUrl]);
  });

  for (const client of NIX_CLIENTS) {
    it(`${client.name} on B (no Pi, upstream blackholed) substitutes a closure A holds with an upstream signature, every NAR from A`, async () => {
      await withA();
      const before = await getJson<ShareSnapshot>('a', `${a!.url}/_/share`);
      const res = await fetchOnB([closure.root], client);
      expect(res.code, res.stderr).toBe(0);
      expect(closure.paths.every((p) => existsSync(join(res.store, p)))).toBe(true);
      const after = await getJson<ShareSnapshot>('a', `${a!.url}/_/share`);
      expect(after.totals.nars - before.totals.nars).toBe(closure.paths.length);
      expect(after.clients.map((c) => c.client)).toContain(lab.address('b'));
      const stats = await getJson<StatsResponse>('b', `${b.url}/_/stats`);
      expect(stats.periods.sinceInstall.nar.upstreamBytes).toBe(0);
      console.log(`${client.name}: ${closure.paths.length} paths from A in ${res.ms.toFixed(0)} ms`);
    });
  }

  it('a path A built itself (unsigned) is never served: not to B\'s Nix, not to a direct request, and its existence is not told', async () => {
    await withA();
    const res = await fetchOnB([own], NIX_CLIENTS[0], 60_000);
    expect(res.code).not.toBe(0);
    expect(existsSync(join(res.store, own))).toBe(false);
    const direct = async (hash: string) => {
      const script = `fetch(${JSON.stringify(`${aUrl}${hash}.narinfo`)}).then(async (r) => process.stdout.write(JSON.stringify({ status: r.status, body: await r.text() })))`;
      return JSON.parse((await run('ip', [...lab.exec('b').slice(1), process.execPath, '-e', script], { timeoutMs: 10_000 })).stdout) as { status: number; body: string };
    };
    const ownAnswer = await direct(own.slice(11, 43));
    expect(ownAnswer.status).toBe(404);
    expect(ownAnswer).toEqual(await direct('0'.repeat(32)));
    const share = await getJson<ShareSnapshot>('a', `${a!.url}/_/share`);
    expect(share.totals.narinfoNotShared).toBeGreaterThanOrEqual(2);
  });

  it("a spoofed peer's forged narinfo is never served: it is refused, and B's Nix gets every path from A", async () => {
    await withA();
    // The spoof claims the trusted key's name, and signs with a key of its own under that name.
    const spoofDir = join(dir, 'spoof');
    await mkdir(join(spoofDir, 'key'), { recursive: true });
    const forger = await generateKey(join(spoofDir, 'key'), 'upstream-1');
    await makeStaticCache(join(spoofDir, 'cache'), [closure.root], forger, 'xz');
    await mkdir(join(spoofDir, 'nginx'), { recursive: true });
    const spoof = await Nginx.start({ root: join(spoofDir, 'cache'), workDir: join(spoofDir, 'nginx'), port: 37517, host: lab.address('spoof'), wrapper: lab.exec('spoof') });
    const xml = `<?xml version="1.0" standalone='no'?><!DOCTYPE service-group SYSTEM "avahi-service.dtd">
<service-group><name>nix-lan-cache share on spoof</name><service protocol="ipv4"><type>_nix-peer._tcp</type><port>37517</port>
<txt-record>path=/</txt-record><txt-record>keys=upstream-1</txt-record><txt-record>v=1</txt-record></service></service-group>`;
    const mark = b.logs.length;
    const avahi = await startAvahiPublisher(lab.exec('spoof'), join(spoofDir, 'avahi'), 'spoof-avahi', { 'nix-peer.service': xml });
    onTestFinished(async () => {
      await stopProcess(avahi);
      await spoof.stop();
    });
    const spoofUrl = `http://${lab.address('spoof')}:37517/`;
    await until('B admitted the spoof on probation', 10_000, () => logged(b, 'discovery-admitted', spoofUrl, mark));
    const before = await getJson<ShareSnapshot>('a', `${a!.url}/_/share`);
    const res = await fetchOnB([closure.root]);
    expect(res.code, res.stderr).toBe(0);
    expect(closure.paths.every((p) => existsSync(join(res.store, p)))).toBe(true);
    const refused = await until('the spoof refused', 5000, () => logged(b, 'discovery-refused', spoofUrl, mark));
    expect(String(refused.reason)).toMatch(/signature that claims a trusted key \(upstream-1\) and does not verify/);
    expect(b.logs.slice(mark).some((l) => l.event === 'untrusted-narinfo')).toBe(true);
    expect(await spoof.narHits()).toEqual([]);
    const after = await getJson<ShareSnapshot>('a', `${a!.url}/_/share`);
    expect(after.totals.nars - before.totals.nars).toBe(closure.paths.length);
  });

  it("A stops mid-NAR: B's command still succeeds once the upstream answers, the NAR going on from upstream at the same byte", async () => {
    // A sends 2 MB/s to each machine, so its 8 MiB NAR is mid-stream for seconds.
    if (a) await a.stop();
    const mark = b.logs.length;
    const slowA = await startA({ share: { clientBytesPerSecond: 2_000_000 } });
    await until('B admitted A again', 10_000, () => logged(b, 'discovery-admitted', aUrl, mark));
    onTestFinished(async () => {
      await blackholeUpstream();
      await slowA.stop();
      a = undefined;
    });
    const before = await getJson<ShareSnapshot>('a', `${slowA.url}/_/share`);
    const fetching = fetchOnB([big.root], NIX_CLIENTS[0], 90_000);
    const sent = await until('A half-way through the NAR', 20_000, async () => {
      const s = await getJson<ShareSnapshot>('a', `${slowA.url}/_/share`);
      return s.totals.bytes - before.totals.bytes >= 1_000_000 && s.totals.bytes - before.totals.bytes;
    });
    await upstreamAnswers();
    await until("B's upstream back up", 10_000, async () => {
      const h = await getJson<{ origins: Array<{ kind: string; state: string }> }>('b', `${b.url}/_/health`);
      return h.origins.find((o) => o.kind === 'upstream')?.state === 'closed';
    });
    const still = await getJson<ShareSnapshot>('a', `${slowA.url}/_/share`);
    expect(still.totals.bytes - before.totals.bytes, 'A finished before it could be stopped').toBeLessThan(BIG);
    await slowA.stop('SIGKILL');
    const res = await fetching;
    expect(res.code, res.stderr).toBe(0);
    expect(existsSync(join(res.store, big.paths.find((p) => p.endsWith('-big'))!))).toBe(true);
    const failover = b.logs.slice(mark).find((l) => l.msg === 'NAR failover');
    expect(failover, JSON.stringify(b.logs.slice(-20))).toMatchObject({ from: `peer:${lab.address('a')}:37517`, to: '127.0.0.1:8081' });
    expect(Number(failover!.offset)).toBeGreaterThanOrEqual(sent as number);
    const stats = await getJson<StatsResponse>('b', `${b.url}/_/stats`);
    const fromUpstream = stats.periods.sinceInstall.nar.upstreamBytes;
    expect(fromUpstream).toBeGreaterThan(0);
    expect(fromUpstream).toBeLessThan(BIG); // only the rest, from the byte A stopped at
    console.log(`A killed after ${failover!.offset} bytes; upstream delivered the other ${fromUpstream}`);
  });
});
