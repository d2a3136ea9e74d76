import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli } from '../helpers/cache.js';
import { buildClosure, generateKey, makeStaticCache, removeDir, tempDir, type CacheKey } from '../helpers/nix.js';

let work: string;
let key: CacheKey;
let cache: string;

beforeAll(async () => {
  work = await tempDir('verify-deep');
  key = await generateKey(work, 'pi.lan-1');
  const closure = await buildClosure(`verify-deep-${process.pid}-${Date.now()}`, [{ name: 'leaf', size: 20_000 }]);
  cache = join(work, 'cache');
  await makeStaticCache(cache, [closure.root], key, 'xz');
});

afterAll(async () => {
  if (work) await removeDir(work);
});

describe('verify --deep on a machine without the decompressor', () => {
  it('xz not installed: a clear error naming xz, exit status 2, no stack trace, no problem blamed on the cache', async () => {
    const res = await cli(['verify', '--cache', cache, '--trusted-public-key', key.publicKey, '--deep'], { env: { ...process.env, PATH: join(work, 'no-such-bin') } });
    expect(res.stderr).toMatch(/^nix-lan-cache: (CONFIG: )?verify --deep cannot unpack xz NARs: running `xz` failed \(.*ENOENT.*\); install it or run without --deep\n$/);
    expect(res.stderr).not.toMatch(/\n\s+at /); // no stack trace
    expect(res.stdout).not.toMatch(/wrong-nar-hash/);
    expect(res.code).toBe(2);
  });

  it('the same cache without --deep needs no decompressor and passes', async () => {
    const res = await cli(['verify', '--cache', cache, '--trusted-public-key', key.publicKey], { env: { ...process.env, PATH: join(work, 'no-such-bin') } });
    expect(res.stdout).toContain('0 problems');
    expect(res.code).toBe(0);
  });
});
