import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli } from '../helpers/cache.js';
import { NIX_CLIENTS } from '../helpers/nix-clients.js';
import { buildClosure, generateKey, removeDir, substitute, tempDir, type CacheKey, type Closure } from '../helpers/nix.js';
import { Nginx } from '../helpers/nginx.js';
import { stopAll } from '../helpers/proc.js';
import { serveUntilExit, startProxy, type ProxyProcess } from '../helpers/proxy.js';
import { startS3Engine, type S3Engine } from '../helpers/s3-engine.js';
import { until } from '../helpers/wait.js';
import type { StatsResponse } from '../../src/api.js';

const salt = `s3-proxy-${process.pid}-${Date.now()}`;
let engine: S3Engine;
let work: string;
let key: CacheKey;
let closure: Closure;
let proxy: ProxyProcess;
const proxies: ProxyProcess[] = [];

beforeAll(async () => {
  engine = await startS3Engine();
  work = await tempDir('s3-proxy');
  key = await generateKey(work, 'lab-1');
  closure = await buildClosure(`${salt}`, [
    { name: 'leaf-a', size: 2_000_000 },
    { name: 'leaf-b', size: 300_000 },
    { name: 'leaf-c', size: 30_000 },
  ]);
  await engine.createBucket('lab');
  const pushed = await cli(['push', '--to', engine.url('lab'), '--key-file', key.secretFile, closure.root], { env: { ...process.env, ...engine.env } });
  expect(pushed.code, pushed.stderr).toBe(0);
  // The bucket is private: only a signed request reads it. No upstream answers (a refused port), so every NAR must come from the bucket.
  proxy = await startProxy(['--no-mdns', '--lan', engine.url('lab'), '--upstream', 'http://127.0.0.1:1/', '--trusted-public-key', key.publicKey], { env: engine.env });
  proxies.push(proxy);
});

afterAll(async () => {
  await Promise.all(proxies.map((p) => p.stop()));
  await stopAll();
  await engine?.stop();
  if (work) await removeDir(work);
});

async function stats(p: ProxyProcess): Promise<StatsResponse> {
  return (await (await fetch(`${p.url}/_/stats`)).json()) as StatsResponse;
}

describe('the proxy serves a private bucket (signed GETs) to real Nix', () => {
  it('an unsigned GET of the narinfo is refused by the bucket (403), the proxy answers it', async () => {
    const hash = closure.root.slice(11, 43);
    expect((await fetch(`${engine.endpoint}/lab/${hash}.narinfo`)).status).toBe(403);
    const res = await fetch(`${proxy.url}/${hash}.narinfo`);
    expect(res.status).toBe(200);
    expect(await res.text()).toContain(`StorePath: ${closure.root}`);
  });

  for (const client of NIX_CLIENTS) {
    it(`${client.name} substitutes the closure from the bucket through the proxy`, async () => {
      const before = (await stats(proxy)).periods.sinceInstall.nar.lanBytes;
      const store = join(work, `client-${client.suite}`);
      const res = await substitute(store, [closure.root], proxy.url, { client, xdgCache: join(work, `xdg-${client.suite}`), trustedKeys: [key.publicKey] });
      expect(res.code, res.stderr).toBe(0);
      for (const p of closure.paths) expect(existsSync(join(store, p))).toBe(true);
      const after = await stats(proxy);
      // Every NAR byte came from the bucket (a LAN origin): at least the closure's 2.3 MB.
      expect(after.periods.sinceInstall.nar.lanBytes - before).toBeGreaterThan(2_300_000);
      expect(after.origins.find((o) => o.name.startsWith('s3://lab?'))?.state).toBe('up');
    });
  }

  it('answers a Range request for a NAR from the bucket, byte for byte', async () => {
    const hash = closure.paths.find((p) => p.endsWith('leaf-a'))!.slice(11, 43);
    const narinfo = await (await fetch(`${proxy.url}/${hash}.narinfo`)).text();
    const url = /^URL: (.*)$/m.exec(narinfo)![1]!;
    const whole = Buffer.from(await (await fetch(`${proxy.url}/${url}`)).arrayBuffer());
    expect(whole.length).toBeGreaterThan(2_000_000);
    const part = await fetch(`${proxy.url}/${url}`, { headers: { range: 'bytes=1000000-' } });
    expect(part.status).toBe(206);
    expect(Buffer.from(await part.arrayBuffer()).equals(whole.subarray(1_000_000))).toBe(true);
  });
});

describe('the bucket behind a Pi, and its signatures', () => {
  it('the Pi dies in the middle of a NAR: the proxy goes on from the bucket at the same offset, and Nix 2.8 gets the closure', async () => {
    // The Pi holds the same closure (the same NARs by NarHash), pushed into a directory that nginx serves slowly.
    const piDir = join(work, 'pi');
    expect((await cli(['push', '--to', piDir, '--key-file', key.secretFile, closure.root])).code).toBe(0);
    const pi = await Nginx.start({ root: piDir, workDir: join(work, 'pi-nginx'), limitRate: '256k' });
    try {
      // Streamed, not held back until verified (holdMaxSeconds 0): Nix has part of leaf-a when the Pi dies, and the bucket must go on at that offset.
      const config = join(work, 'streamed.json');
      await writeFile(config, JSON.stringify({ cache: { holdMaxSeconds: 0 } }));
      const p = await startProxy(['--no-mdns', '--config', config, '--lan', pi.url, '--upstream', engine.url('lab'), '--trusted-public-key', key.publicKey], { env: engine.env });
      proxies.push(p);
      const store = join(work, 'client-failover');
      const fetching = substitute(store, [closure.root], p.url, { xdgCache: join(work, 'xdg-failover'), trustedKeys: [key.publicKey] });
      // More bytes from the Pi than the paths other than leaf-a hold (330 kB): it is in the middle of leaf-a's 2 MB.
      await until('the Pi is part-way through leaf-a', 60_000, async () => (await stats(p)).periods.sinceInstall.nar.lanBytes > 700_000);
      await pi.stop();
      const res = await fetching;
      expect(res.code, res.stderr).toBe(0);
      for (const path of closure.paths) expect(existsSync(join(store, path))).toBe(true);
      const failover = p.logs.find((l) => l.msg === 'NAR failover');
      expect(failover).toMatchObject({ to: expect.stringMatching(/^s3:\/\/lab\?endpoint=/) });
      expect(failover!.offset as number).toBeGreaterThan(0);
      expect((await stats(p)).periods.sinceInstall.nar.upstreamBytes).toBeGreaterThan(0);
    } finally {
      await pi.stop();
    }
  });

  it('a narinfo in the bucket signed by a key the proxy does not trust is not served', async () => {
    const other = await generateKey(work, 'someone-else-1');
    const p = await startProxy(['--no-mdns', '--lan', engine.url('lab'), '--upstream', 'http://127.0.0.1:1/', '--trusted-public-key', other.publicKey], { env: engine.env });
    proxies.push(p);
    const res = await fetch(`${p.url}/${closure.root.slice(11, 43)}.narinfo`);
    expect(res.status).toBe(404);
    expect(p.logs.find((l) => l.event === 'untrusted-narinfo')).toMatchObject({ storePath: closure.root, sigs: ['lab-1'] });
    // The bucket itself was read and is up: it is the signature that was refused.
    const health = (await (await fetch(`${p.url}/_/health`)).json()) as { origins: Array<{ name: string; state: string }> };
    expect(health.origins.find((o) => o.name.startsWith('s3://lab?'))?.state).toBe('closed');
  });
});

describe('the proxy with wrong or missing credentials for a bucket', () => {
  it('a wrong secret: the bucket is down (its 403 is not "absent"), the lookup is a quick 404, the secret never logged', async () => {
    const secret = `wrong-${randomBytes(12).toString('hex')}`;
    const bad = await startProxy(['--no-mdns', '--lan', engine.url('lab'), '--upstream', 'http://127.0.0.1:1/', '--trusted-public-key', key.publicKey], {
      env: { AWS_ACCESS_KEY_ID: engine.accessKeyId, AWS_SECRET_ACCESS_KEY: secret },
    });
    proxies.push(bad);
    const res = await fetch(`${bad.url}/${closure.root.slice(11, 43)}.narinfo`);
    expect(res.status).toBe(404);
    const health = (await (await fetch(`${bad.url}/_/health`)).json()) as { origins: Array<{ name: string; state: string; reason: string }> };
    const bucket = health.origins.find((o) => o.name.startsWith('s3://lab?'))!;
    expect(bucket.state).toBe('open');
    expect(bucket.reason).toContain('HTTP 403');
    await bad.stop();
    expect(JSON.stringify(bad.logs)).not.toContain(secret);
  });

  it('no credentials at all: serve does not start, and says where credentials are read from', async () => {
    const res = await serveUntilExit(['--no-mdns', '--listen', '127.0.0.1:0', '--lan', engine.url('lab')], { wrapper: ['env', '-u', 'AWS_ACCESS_KEY_ID', '-u', 'AWS_SECRET_ACCESS_KEY', '-u', 'AWS_PROFILE', `HOME=${join(work, 'nohome')}`] });
    expect(res.code).toBe(2);
    expect(JSON.stringify(res.logs)).toMatch(/no AWS credentials for s3:\/\/lab\?endpoint=/);
  });
});
