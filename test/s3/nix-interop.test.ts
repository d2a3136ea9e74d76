import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli } from '../helpers/cache.js';
import { NIX_CLIENTS } from '../helpers/nix-clients.js';
import { buildClosure, generateKey, makeStaticCache, nixEnv, removeDir, substitute, tempDir, type CacheKey, type Closure } from '../helpers/nix.js';
import { run, stopAll } from '../helpers/proc.js';
import { startProxy, type ProxyProcess } from '../helpers/proxy.js';
import { checkBucket, startS3Engine, type S3Engine } from '../helpers/s3-engine.js';

/**
 * Nix's own s3:// store, both ways. Debian unstable's Nix (2.34) speaks
 * s3:// but is built without AWS support: its requests are unsigned, so
 * these buckets let anyone get, put and list. Its narinfo disk cache is keyed
 * by bucket name, so every run of it gets a fresh cache directory.
 */
const S3_NIX = NIX_CLIENTS.find((c) => c.suite === 'sid')!;
const salt = `s3-interop-${process.pid}-${Date.now()}`;
let engine: S3Engine;
let work: string;
let key: CacheKey;
let closure: Closure;
const proxies: ProxyProcess[] = [];

beforeAll(async () => {
  engine = await startS3Engine();
  work = await tempDir('s3-interop');
  key = await generateKey(work, 'lab-1');
  closure = await buildClosure(salt, [
    { name: 'leaf-a', size: 1_000_000 },
    { name: 'leaf-b', size: 100_000 },
  ]);
});

afterAll(async () => {
  await Promise.all(proxies.map((p) => p.stop()));
  await stopAll();
  await engine?.stop();
  if (work) await removeDir(work);
});

describe(`interop with ${S3_NIX.name}'s s3:// store`, () => {
  it(`a bucket written by our push is a cache ${S3_NIX.name} substitutes from over s3://`, async () => {
    await engine.createBucket('ours', { publicReadWrite: true });
    const pushed = await cli(['push', '--to', engine.url('ours'), '--key-file', key.secretFile, closure.root], { env: { ...process.env, ...engine.env } });
    expect(pushed.code, pushed.stderr).toBe(0);
    const store = join(work, 'client-ours');
    const res = await substitute(store, [closure.root], engine.url('ours'), { client: S3_NIX, xdgCache: join(work, 'xdg-ours'), trustedKeys: [key.publicKey] });
    expect(res.code, res.stderr).toBe(0);
    for (const p of closure.paths) expect(existsSync(join(store, p))).toBe(true);
  });

  it(`a bucket written by ${S3_NIX.name}'s nix copy --to s3:// passes our verify, and the proxy serves it to Nix 2.8`, async () => {
    await engine.createBucket('theirs', { publicReadWrite: true });
    // That Nix has its own (empty) store in its chroot: it copies from a file:// cache this machine's Nix made and signed.
    const source = join(work, 'file-cache');
    await makeStaticCache(source, [closure.root], key);
    const copy = S3_NIX.wrap(['nix', '--extra-experimental-features', 'nix-command', 'copy', '--no-check-sigs', '--from', `file://${source}`, '--to', engine.url('theirs'), closure.root]);
    const copied = await run(copy[0]!, copy.slice(1), { env: nixEnv({ XDG_CACHE_HOME: join(work, 'xdg-copy') }), timeoutMs: 120_000 });
    expect(copied.code, copied.stderr).toBe(0);
    const check = await checkBucket(engine, 'theirs');
    expect(check.problems).toEqual([]);
    expect(check.narinfos.size).toBe(3);
    for (const info of check.narinfos.values()) expect(info.url).toMatch(/^nar\/[0-9a-z]{52}\.nar\.xz$/);

    const verify = await cli(['verify', '--cache', engine.url('theirs'), '--deep', '--trusted-public-key', key.publicKey], { env: { ...process.env, ...engine.env } });
    expect(verify.stdout).toContain('verify: 3 narinfos, 3 NARs, 0 problems');
    expect(verify.code).toBe(0);

    const proxy = await startProxy(['--no-mdns', '--upstream', engine.url('theirs'), '--trusted-public-key', key.publicKey], { env: engine.env });
    proxies.push(proxy);
    const store = join(work, 'client-theirs');
    const res = await substitute(store, [closure.root], proxy.url, { xdgCache: join(work, 'xdg-theirs'), trustedKeys: [key.publicKey] });
    expect(res.code, res.stderr).toBe(0);
    for (const p of closure.paths) expect(existsSync(join(store, p))).toBe(true);
  });

  it('Nix 2.8 and 2.26 read a public bucket over HTTP, path-style', async () => {
    for (const client of NIX_CLIENTS.filter((c) => c !== S3_NIX)) {
      const store = join(work, `client-http-${client.suite}`);
      const res = await substitute(store, [closure.root], `${engine.endpoint}/ours`, { client, xdgCache: join(work, `xdg-http-${client.suite}`), trustedKeys: [key.publicKey] });
      expect(res.code, `${client.name}: ${res.stderr}`).toBe(0);
      for (const p of closure.paths) expect(existsSync(join(store, p))).toBe(true);
    }
  });
});
