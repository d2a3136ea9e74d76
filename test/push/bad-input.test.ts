import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkCache, cli } from '../helpers/cache.js';
import { buildClosure, generateKey, removeDir, tempDir, type CacheKey, type Closure } from '../helpers/nix.js';
import { run, runOk, stopAll } from '../helpers/proc.js';

let work: string;
let key: CacheKey;
let closure: Closure;
const mounts: string[] = [];

async function tmpfs(dir: string, options: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  await runOk('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir]);
  mounts.push(dir);
}

beforeAll(async () => {
  work = await tempDir('bad');
  key = await generateKey(work, 'builder-1');
  closure = await buildClosure(`bad-${process.pid}-${Date.now()}`, [
    { name: 'one', size: 900_000 },
    { name: 'two', size: 900_000 },
    { name: 'three', size: 900_000 },
  ]);
});

afterAll(async () => {
  for (const m of mounts) await run('umount', [m]);
  await stopAll();
  await removeDir(work);
});

describe('bad input: a clear error, a non-zero exit and a cache that is still valid', () => {
  it('a path that does not exist', async () => {
    const cache = join(work, 'c1');
    const missing = `/nix/store/${'0'.repeat(32)}-not-there`;
    const res = await cli(['push', '--to', cache, '--key-file', key.secretFile, missing]);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain(`${missing}: no such file or store path`);
    const outside = await cli(['push', '--to', cache, '--key-file', key.secretFile, work]);
    expect(outside.code).toBe(2);
    expect(outside.stderr).toContain('which is not in /nix/store');
    expect(await readdir(cache).catch(() => 'absent')).toBe('absent');
  });

  it('a key file that is missing, malformed, or a public key', async () => {
    const cache = join(work, 'c2');
    const bad = join(work, 'bad.sk');
    await writeFile(bad, 'not a key\n');
    const pub = join(work, 'builder-1.pk');
    for (const [file, msg] of [
      [join(work, 'nope.sk'), 'cannot read key file'],
      [bad, 'is not a Nix secret key file'],
      [pub, 'has 32 bytes, expected 64'],
    ] as const) {
      const res = await cli(['push', '--to', cache, '--key-file', file, closure.root]);
      expect(res.code).toBe(2);
      expect(res.stderr).toContain(msg);
    }
    expect(await readdir(cache).catch(() => 'absent')).toBe('absent');
  });

  it('bad flags', async () => {
    const res = await cli(['push', '--to', join(work, 'c3'), '--compression', 'lzma', closure.root]);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain('--compression must be xz or zstd');
    const gc = await cli(['gc', '--cache', work, '--keep', 'many']);
    expect(gc.code).toBe(2);
    expect(gc.stderr).toContain('--keep must be a number');
    const unknown = await cli(['verify', '--cache', work, '--frobnicate']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("Unknown option '--frobnicate'");
  });

  it('an unwritable target (a read-only mount)', async () => {
    const ro = join(work, 'ro');
    await tmpfs(ro, 'ro,size=1m');
    const res = await cli(['push', '--to', ro, '--key-file', key.secretFile, closure.root]);
    expect(await readdir(ro)).toEqual([]);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/cannot write to cache .*read-only file system/i);
  });

  it('a full disk: the push fails part way, every narinfo left has its NAR, no temporary files stay', async () => {
    const full = join(work, 'full');
    await tmpfs(full, 'size=2m');
    const res = await cli(['push', '--jobs', '1', '--to', full, '--key-file', key.secretFile, closure.root]);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/ENOSPC|no space left/i);
    expect(res.stderr).toContain('the cache is still consistent');
    const check = await checkCache(full);
    expect(check.problems).toEqual([]);
    expect(check.narinfos.size).toBeLessThan(4);
    expect(check.narinfos.size).toBeGreaterThan(0);
    expect((await readdir(join(full, 'nar'))).filter((n) => n.startsWith('.tmp-'))).toEqual([]);
    const verify = await cli(['verify', '--cache', full, '--trusted-public-key', key.publicKey]);
    expect(verify.code).toBe(0);
  });

  it('verify says so when a NAR is missing, truncated or corrupt, or a signature is bad', async () => {
    const cache = join(work, 'c4');
    expect((await cli(['push', '--to', cache, '--key-file', key.secretFile, closure.root])).code).toBe(0);
    const { narinfos } = await checkCache(cache);
    const [a, b, c] = [...narinfos.values()].filter((i) => i.references.length === 0);
    await run('rm', [join(cache, a!.url)]);
    await run('truncate', ['-s', '100', join(cache, b!.url)]);
    await run('dd', ['if=/dev/zero', `of=${join(cache, c!.url)}`, 'bs=1', 'count=8', 'seek=200', 'conv=notrunc']);
    await writeFile(join(cache, 'nar', 'stray.nar.xz'), 'x');
    const other = await generateKey(work, 'someone-else-1');
    const res = await cli(['verify', '--cache', cache, '--trusted-public-key', other.publicKey]);
    expect(res.code).toBe(1);
    expect(res.stdout).toMatch(/missing-nar: .*does not exist/);
    expect(res.stdout).toMatch(/wrong-size: /);
    expect(res.stdout).toMatch(/wrong-hash: /);
    expect(res.stdout).toMatch(/bad-signature: .*no signature by a trusted key/);
    expect(res.stdout).toContain('orphan: nar/stray.nar.xz');
  });
});
