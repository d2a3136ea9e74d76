import { existsSync } from 'node:fs';
import { mkdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cacheBytes } from '../../src/fill/cache-size.js';
import { serialiseNarInfo } from '../../src/protocol/narinfo.js';
import { gc } from '../../src/push/gc.js';
import { rootFileName } from '../../src/push/roots.js';
import { verify } from '../../src/push/verify.js';
import { checkCache } from '../helpers/cache.js';
import { FakeUpstream, makeKey, type FakePath } from '../helpers/fake-upstream.js';
import { removeDir, tempDir } from '../helpers/nix.js';

const DAY = 86_400_000;
const now = Date.now();

describe('gc --max-size: holds the cache under the cap, oldest-served first, never breaking a kept root', () => {
  let dir: string;
  const paths = new FakeUpstream(makeKey('k-1').secret); // used only to make signed paths, never started
  let rootDep: FakePath, rootTop: FakePath, oldLeaf: FakePath, youngLeaf: FakePath, sharedDep: FakePath, user: FakePath;

  /** Writes a path in push's layout; `servedDaysAgo` sets the files' access time, all were written 30 days ago. */
  async function put(p: FakePath, servedDaysAgo: number): Promise<void> {
    await writeFile(join(dir, p.info.url), p.file);
    await writeFile(join(dir, `${p.storeHash}.narinfo`), serialiseNarInfo(p.info));
    const written = new Date(now - 30 * DAY);
    const served = new Date(now - servedDaysAgo * DAY);
    for (const f of [p.info.url, `${p.storeHash}.narinfo`]) await utimes(join(dir, f), served, written);
  }

  beforeAll(async () => {
    dir = await tempDir('gc-max-size');
    await mkdir(join(dir, 'nar'));
    await mkdir(join(dir, 'roots', 'laptop'), { recursive: true });
    await writeFile(join(dir, 'nix-cache-info'), 'StoreDir: /nix/store\n');
    rootDep = paths.add('root-dep', 40_000, { compression: 'none' });
    rootTop = paths.add('root-top', 40_000, { compression: 'none', references: [rootDep] });
    oldLeaf = paths.add('old-leaf', 40_000, { compression: 'none' });
    youngLeaf = paths.add('young-leaf', 40_000, { compression: 'none' });
    sharedDep = paths.add('shared-dep', 40_000, { compression: 'none' });
    user = paths.add('user', 40_000, { compression: 'none', references: [sharedDep] });
    // The kept root was served longest ago of all: age alone must not evict it.
    await put(rootDep, 29);
    await put(rootTop, 29);
    await put(oldLeaf, 20);
    await put(sharedDep, 25); // served long ago, but `user` (served yesterday) needs it
    await put(user, 1);
    await put(youngLeaf, 2);
    await writeFile(join(dir, 'roots', 'laptop', rootFileName(new Date(now - DAY))), `${rootTop.storePath}\n${rootDep.storePath}\n`);
  });
  afterAll(async () => removeDir(dir));

  // keepDays 60: every path is "young" and kept by age; only the cap removes any.
  it('evicts the least recently served path nobody refers to, until under the cap; the kept closure and every remaining closure stay whole', async () => {
    const before = await cacheBytes(dir);
    // Room for the root's two paths and about two more.
    const maxSize = before - 2 * 40_000 - 100;
    const report = await gc(dir, { keep: 1, keepDays: 60, graceMinutes: 60, dryRun: false, maxSize, now });
    expect(report.sizeAfter!).toBeLessThanOrEqual(maxSize);
    expect(await cacheBytes(dir)).toBeLessThanOrEqual(maxSize);
    // oldLeaf (served 20 days ago) goes first; sharedDep is older but `user` refers to it, so `user` (1 day) and youngLeaf (2 days) are next in line: youngLeaf is older.
    expect(report.evicted).toEqual([`${oldLeaf.storeHash}.narinfo`, `${youngLeaf.storeHash}.narinfo`]);
    for (const p of [rootTop, rootDep, user, sharedDep]) expect(existsSync(join(dir, `${p.storeHash}.narinfo`))).toBe(true);
    for (const p of [oldLeaf, youngLeaf]) expect(existsSync(join(dir, p.info.url))).toBe(false);
    expect((await checkCache(dir)).problems).toEqual([]);
    expect((await verify(dir, { deep: true, concurrency: 2 })).problems).toEqual([]);
  });

  it('a cap smaller than the kept closure: keeps the closure, evicts everything else, says so', async () => {
    const lines: string[] = [];
    const report = await gc(dir, { keep: 1, keepDays: 60, graceMinutes: 60, dryRun: false, maxSize: 1000, now, log: (l) => lines.push(l) });
    for (const p of [rootTop, rootDep]) expect(existsSync(join(dir, `${p.storeHash}.narinfo`))).toBe(true);
    for (const p of [user, sharedDep]) expect(existsSync(join(dir, `${p.storeHash}.narinfo`))).toBe(false);
    expect(report.evicted).toEqual([`${user.storeHash}.narinfo`, `${sharedDep.storeHash}.narinfo`]);
    expect(lines.join('\n')).toMatch(/over --max-size/);
    expect((await checkCache(dir)).problems).toEqual([]);
  });
});
