import { mkdir, readdir, rename, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalFiles } from '../../src/push/cachefiles.js';
import { gc } from '../../src/push/gc.js';
import { formatRootListing, rootFileName } from '../../src/push/roots.js';
import { checkCache, cli } from '../helpers/cache.js';
import { Nginx } from '../helpers/nginx.js';
import { buildClosure, generateKey, makeStaticCache, removeDir, substitute, tempDir, type CacheKey, type Closure } from '../helpers/nix.js';
import { NIX_CLIENTS } from '../helpers/nix-clients.js';
import { stopAll } from '../helpers/proc.js';

const salt = `gc-${process.pid}-${Date.now()}`;
let work: string;
let key: CacheKey;
let older: Closure;
let newer: Closure;
let cache: string;
const DAY = 86_400_000;

beforeAll(async () => {
  work = await tempDir('gc');
  key = await generateKey(work, 'builder-1');
  older = await buildClosure(`${salt}-old`, [
    { name: 'shared', size: 300_000 },
    { name: 'old-only', size: 400_000 },
  ]);
  newer = await buildClosure(`${salt}-new`, [{ name: 'new-only', size: 300_000 }]);
  cache = join(work, 'cache');
});

afterAll(async () => {
  await stopAll();
  await removeDir(work);
});

const hashOf = (p: string) => p.slice('/nix/store/'.length, '/nix/store/'.length + 32);

/** Makes everything a push wrote look `days` old: the root's name and the files' mtimes. */
async function age(paths: string[], rootDir: string, days: number): Promise<void> {
  const then = new Date(Date.now() - days * DAY);
  for (const p of paths) {
    const ni = join(cache, `${hashOf(p)}.narinfo`);
    await utimes(ni, then, then);
  }
  for (const f of await readdir(join(cache, 'nar'))) await utimes(join(cache, 'nar', f), then, then);
  const [root] = await readdir(rootDir);
  await rename(join(rootDir, root!), join(rootDir, rootFileName(then)));
}

describe('gc with two roots of which the older expires', () => {
  it(`keeps the newer root closure substitutable (${NIX_CLIENTS.map((c) => c.name).join(', ')}) and removes the older one's unique files`, async () => {
    const sharedLeaf = older.paths.find((p) => p.endsWith('-shared'))!;
    expect((await cli(['push', '--to', cache, '--key-file', key.secretFile, '--root', 'pi', older.root])).code).toBe(0);
    await age(older.paths, join(cache, 'roots', 'pi'), 20);
    // The newer system also contains the older one's `shared` leaf.
    expect((await cli(['push', '--to', cache, '--key-file', key.secretFile, '--root', 'pi', newer.root, sharedLeaf])).code).toBe(0);
    const narsBefore = (await readdir(join(cache, 'nar'))).length;
    expect(narsBefore).toBe(5);

    const dry = await cli(['gc', '--cache', cache, '--keep', '1', '--keep-days', '14', '--dry-run']);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toMatch(/would delete 1 roots, 2 narinfos, 2 NARs/);
    expect((await readdir(join(cache, 'nar'))).length).toBe(narsBefore);

    const res = await cli(['gc', '--cache', cache, '--keep', '1', '--keep-days', '14']);
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/deleted 1 roots, 2 narinfos, 2 NARs/);
    expect(res.stdout).toMatch(/freed [\d.]+ KiB/);
    const check = await checkCache(cache);
    expect(check.problems).toEqual([]);
    expect([...check.narinfos.keys()].sort()).toEqual([...newer.paths, sharedLeaf].map(hashOf).sort());
    expect((await readdir(join(cache, 'nar'))).length).toBe(3);
    expect(await readdir(join(cache, 'roots', 'pi'))).toHaveLength(1);
    const ours = await cli(['verify', '--cache', cache, '--trusted-public-key', key.publicKey]);
    expect(ours.stdout).toContain('0 problems, 0 orphaned NARs');

    const nginx = await Nginx.start({ root: cache, workDir: join(work, 'nginx') });
    try {
      for (const client of NIX_CLIENTS) {
        const ok = await substitute(join(work, `client-new-${client.suite}`), [newer.root, sharedLeaf], nginx.url, { client, xdgCache: join(work, `xdg1-${client.suite}`), trustedKeys: [key.publicKey] });
        expect(ok.code, `${client.name}: ${ok.stderr}`).toBe(0);
        const gone = await substitute(join(work, `client-old-${client.suite}`), [older.root], nginx.url, { client, xdgCache: join(work, `xdg2-${client.suite}`), trustedKeys: [key.publicKey] });
        expect(gone.code, client.name).not.toBe(0);
      }
    } finally {
      await nginx.stop();
    }
  });

  it('is safe while a push runs: files younger than the grace period stay, however unrooted', async () => {
    // 8 MB of random bytes: xz takes seconds over it, so the push is still writing when gc runs.
    const third = await buildClosure(`${salt}-third`, [{ name: 'pushing', size: 8_000_000 }]);
    const cache2 = join(work, 'cache2');
    // An unrooted push and a gc that would delete everything unrooted, at the same time.
    let pushDone = false;
    const pushing = cli(['push', '--to', cache2, '--key-file', key.secretFile, third.root]).finally(() => (pushDone = true));
    // gc starts once the push has written its first NAR file and before it has published anything.
    let started = false;
    for (let i = 0; i < 500 && !started && !pushDone; i++) {
      started = (await readdir(join(cache2, 'nar')).catch(() => [])).length > 0;
      if (!started) await new Promise((r) => setTimeout(r, 20));
    }
    expect(started).toBe(true);
    const narinfosAtGc = (await readdir(cache2)).filter((f) => f.endsWith('.narinfo'));
    const gcRes = await cli(['gc', '--cache', cache2, '--keep', '0', '--keep-days', '0']);
    expect(pushDone, 'gc must run while the push is still going').toBe(false);
    expect(narinfosAtGc).toHaveLength(0);
    const pushRes = await pushing;
    expect(pushRes.code).toBe(0);
    expect(gcRes.code).toBe(0);
    const check = await checkCache(cache2);
    expect(check.problems).toEqual([]);
    expect(check.narinfos.size).toBe(2);
    // With no grace period the same files are fair game: gc really would have removed them.
    const now = await cli(['gc', '--cache', cache2, '--keep', '0', '--keep-days', '0', '--grace-minutes', '0']);
    expect(now.stdout).toMatch(/deleted 0 roots, 2 narinfos, 2 NARs/);
    expect((await checkCache(cache2)).narinfos.size).toBe(0);
    expect(await readdir(join(cache2, 'nar'))).toEqual([]);
    expect((await stat(join(cache2, 'nix-cache-info'))).isFile()).toBe(true);
  });
});

describe('gc racing the end of a push', () => {
  it('a push that records its root and lets go of its hold while gc reads the cache loses nothing (grace 0)', async () => {
    const dir = join(work, 'race');
    await makeStaticCache(dir, [newer.root], key);
    // What a bucket's push does as it ends, at the worst moment for gc: between two of gc's reads, it records its
    // root and then releases the lease that held its closure. gc must see one or the other.
    let ended = false;
    const files = new (class extends LocalFiles {
      override async inUse() {
        if (ended) return { hashes: new Set<string>(), nars: new Set<string>() };
        ended = true;
        await mkdir(join(dir, 'roots', 'lab'), { recursive: true });
        await writeFile(join(dir, 'roots', 'lab', rootFileName(new Date())), formatRootListing(newer.paths));
        return { hashes: new Set<string>(), nars: new Set<string>() };
      }
    })(dir);
    const report = await gc(files, { keep: 1, keepDays: 0, graceMinutes: 0, dryRun: false, now: Date.now() + 60_000 });
    expect(ended).toBe(true);
    expect(report.narinfosDeleted).toEqual([]);
    const check = await checkCache(dir);
    expect(check.problems).toEqual([]);
    expect(check.narinfos.size).toBe(newer.paths.length);
  });
});
