import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Nginx } from '../helpers/nginx.js';
import { buildClosure, generateKey, makeStaticCache, removeDir, substitute, tempDir, type CacheKey, type Closure } from '../helpers/nix.js';
import { startFill, type FillProcess } from '../helpers/pi-fill.js';
import { stopAll } from '../helpers/proc.js';
import { startProxy, type ProxyProcess } from '../helpers/proxy.js';
import { checkBucket, startS3Engine, type S3Engine } from '../helpers/s3-engine.js';
import { until } from '../helpers/wait.js';

/**
 * A lab's fill service over a bucket: what one machine fetched from
 * upstream through it lands in the bucket (NAR first, then narinfo), and the
 * next machine gets it from the bucket, through fill or directly.
 */
const salt = `s3-fill-${process.pid}-${Date.now()}`;
let engine: S3Engine;
let work: string;
let upKey: CacheKey;
let closure: Closure;
let upstream: Nginx;
let fill: FillProcess;
const proxies: ProxyProcess[] = [];

beforeAll(async () => {
  engine = await startS3Engine();
  Object.assign(process.env, engine.env); // fill and the proxies are started with this process's environment
  work = await tempDir('s3-fill');
  upKey = await generateKey(work, 'upstream-1');
  closure = await buildClosure(salt, [
    { name: 'leaf-a', size: 300_000 },
    { name: 'leaf-multipart', size: 18_000_000 },
  ]);
  const upCache = join(work, 'upstream');
  await makeStaticCache(upCache, [closure.root], upKey, 'zstd');
  upstream = await Nginx.start({ root: upCache, workDir: join(work, 'nginx-up') });
  await engine.createBucket('filled');
  fill = await startFill(['--cache', engine.url('filled'), '--upstream', upstream.url, '--trusted-public-key', upKey.publicKey, '--spool-dir', join(work, 'spool')]);
});

afterAll(async () => {
  await Promise.all(proxies.map((p) => p.stop()));
  await fill?.stop();
  await upstream?.stop();
  await stopAll();
  await engine?.stop();
  if (work) await removeDir(work);
});

async function laptop(name: string, args: string[]) {
  const proxy = await startProxy(['--no-mdns', '--upstream', 'http://127.0.0.1:1/', '--trusted-public-key', upKey.publicKey, ...args]);
  proxies.push(proxy);
  const store = join(work, `laptop-${name}`);
  const res = await substitute(store, [closure.root], proxy.url, { xdgCache: join(work, `xdg-${name}`), trustedKeys: [upKey.publicKey], timeoutMs: 180_000 });
  return { ...res, has: closure.paths.every((p) => existsSync(join(store, p))) };
}

describe('fill --cache s3://…', () => {
  it('a laptop gets the closure from upstream through fill; fill publishes it into the bucket, NAR (multipart) before narinfo', async () => {
    const first = await laptop('1', ['--lan-fill', fill.url]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.has).toBe(true);
    const check = await until('fill published the closure into the bucket', 60_000, async () => {
      const c = await checkBucket(engine, 'filled');
      return c.narinfos.size === closure.paths.length ? c : undefined;
    });
    expect(check.problems).toEqual([]);
    for (const info of check.narinfos.values()) expect(info.url).toMatch(/^nar\/[0-9a-z]{52}-zst$/);
    expect([...check.narinfos.values()].some((i) => (i.fileSize ?? 0) > 16 * 1024 * 1024)).toBe(true);
    // Its spool holds no download any more.
    expect((await readdir(join(work, 'spool', 'nar'))).filter((n) => n.startsWith('.tmp-'))).toEqual([]);
  });

  it('the next laptops get it from the bucket: directly (signed) and through fill, upstream not asked for a NAR', async () => {
    const upstreamNars = (await upstream.narHits()).length;
    const direct = await laptop('2', ['--lan', engine.url('filled')]);
    expect(direct.code, direct.stderr).toBe(0);
    expect(direct.has).toBe(true);
    const viaFill = await laptop('3', ['--lan-fill', fill.url]);
    expect(viaFill.code, viaFill.stderr).toBe(0);
    expect(viaFill.has).toBe(true);
    expect((await upstream.narHits()).length).toBe(upstreamNars);
  });
});
