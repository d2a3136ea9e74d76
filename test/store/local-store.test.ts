import { createHash } from 'node:crypto';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSha256, sha256FromBytes } from '../../src/protocol/hash.js';
import { LocalStore, StoreError } from '../../src/store/local-store.js';
import { dumpNar } from '../../src/store/nar-dump.js';
import { addUnsigned, substituteInto } from '../helpers/laptop-store.js';
import { buildClosure, buildPath, generateKey, makeStaticCache, nixEnv, removeDir, tempDir, type CacheKey, type Closure } from '../helpers/nix.js';
import { run, runOk } from '../helpers/proc.js';
import { CLI } from '../helpers/proxy.js';

/**
 * The share reads a laptop's store itself: its SQLite database with
 * node:sqlite and its files into NARs. Real Nix (this machine's 2.8, the
 * Nix that writes the stores here) is the reference for both.
 */
const TREE_SCRIPT = [
  '/bin/mkdir -p $out/a/b/c $out/empty',
  '/bin/echo hi > $out/a/f',
  ': > $out/a/b/zero',
  '/usr/bin/head -c 300000 /dev/urandom > $out/big',
  '/usr/bin/head -c 65536 /dev/urandom > $out/a/exactly-64k',
  '/usr/bin/head -c 1100000 /dev/urandom > $out/a/b/c/over-a-megabyte',
  '/bin/echo "#!/bin/sh" > $out/run && /bin/chmod +x $out/run',
  '/bin/ln -s a/f $out/relative-link',
  '/bin/ln -s /etc/passwd $out/absolute-link',
  '/bin/ln -s dangling $out/dangling-link',
  '/usr/bin/printf x > "$out/$(/usr/bin/printf \'\\377\\376name\')"',
  '/usr/bin/printf y > $out/B-sorts-before-a',
].join('; ');

async function narOf(path: string): Promise<{ sha256: string; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  for await (const chunk of dumpNar(path)) {
    h.update(chunk);
    size += chunk.length;
  }
  return { sha256: h.digest('hex'), size };
}

async function nixDump(path: string): Promise<{ sha256: string; size: number }> {
  const res = await run('sh', ['-c', `nix-store --dump '${path}' | sha256sum && nix-store --dump '${path}' | wc -c`], { env: nixEnv() });
  const [sum, size] = res.stdout.trim().split('\n');
  return { sha256: sum!.split(' ')[0]!, size: Number(size) };
}

async function pathInfo(paths: string[], store?: string): Promise<Array<{ path: string; narHash: string; narSize: number; references: string[]; signatures?: string[] }>> {
  return JSON.parse(await runOk('nix', ['path-info', '--json', ...(store ? ['--store', store] : []), ...paths], { env: nixEnv() }));
}

describe('reading a Nix store: the database with node:sqlite, the files into NARs', () => {
  let dir: string;
  let tree: string;
  let link: string;
  let closure: Closure;
  let key: CacheKey;
  let laptop: string;

  beforeAll(async () => {
    dir = await tempDir('local-store');
    [tree, link, closure] = await Promise.all([
      buildPath('local-store', 'tree', TREE_SCRIPT),
      buildPath('local-store', 'top-level-link', '/bin/ln -s /nix/store $out'),
      buildClosure('local-store', [{ name: 'leaf-a', size: 2000 }, { name: 'leaf-b', size: 70_000 }]),
    ]);
    key = await generateKey(dir, 'upstream-1');
    await makeStaticCache(join(dir, 'cache'), [closure.root], key, 'xz');
    laptop = join(dir, 'laptop');
    await substituteInto(laptop, [closure.root], join(dir, 'cache'), key);
    await addUnsigned(laptop, [tree]);
  });
  afterAll(async () => {
    if (dir) await removeDir(dir);
  });

  it('dumps NARs byte for byte as `nix-store --dump` does: nested dirs, empty files and dirs, executables, symlinks, big files, names that are not UTF-8', async () => {
    for (const p of [tree, link, ...closure.paths]) expect(await narOf(p), p).toEqual(await nixDump(p));
  });

  it('the NAR of a path in a chroot store is read from its files there, and hashes to its NarHash', async () => {
    const store = new LocalStore(laptop);
    for (const p of [tree, ...closure.paths]) {
      const info = store.lookup(p.slice(11, 43))!.info()!;
      const nar = await narOf(join(store.storeDir, info.path.baseName));
      expect(sha256FromBytes(Buffer.from(nar.sha256, 'hex'))).toBe(info.narHash);
      expect(nar.size).toBe(info.narSize);
    }
    store.close();
  });

  it('looks paths up by hash as `nix path-info --json` describes them, with their signatures', async () => {
    const store = new LocalStore(laptop);
    store.check();
    const nix = await pathInfo([...closure.paths, tree], laptop);
    for (const p of nix) {
      const found = store.lookup(p.path.slice(11, 43));
      expect(found, p.path).toBeDefined();
      const info = found!.info()!;
      expect(info.storePath).toBe(p.path);
      expect(info.narHash).toBe(parseSha256(p.narHash));
      expect(info.narSize).toBe(p.narSize);
      expect(info.references).toEqual(p.references.map((r) => r.slice(11)).sort());
      expect(info.sigs).toEqual(p.signatures ?? []);
      expect(found!.sigs).toEqual(p.signatures ?? []);
    }
    // Substituted from the signed cache: signed; added by hand: not.
    expect(store.lookup(closure.root.slice(11, 43))!.sigs).toEqual([expect.stringMatching(/^upstream-1:/)]);
    expect(store.lookup(tree.slice(11, 43))!.sigs).toEqual([]);
    store.close();
  });

  it('a hash that is not there is not found, also when a stored path sorts right after it', async () => {
    const store = new LocalStore(laptop);
    const hash = closure.root.slice(11, 43);
    const before = hash.slice(0, 31) + (hash[31] === '0' ? '1' : '0');
    expect(store.lookup('00000000000000000000000000000000')).toBeUndefined();
    expect(store.lookup(before === hash ? 'zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz' : before)).toBeUndefined();
    expect(store.lookup(hash.slice(0, 31))).toBeUndefined(); // a prefix of a real hash
    store.close();
  });

  it('says what is wrong with a directory that is not a store, or a database of another schema', async () => {
    expect(() => new LocalStore(join(dir, 'nothing')).check()).toThrow(StoreError);
    expect(() => new LocalStore(join(dir, 'nothing')).check()).toThrow(/is not a Nix store \(cannot read nix\/var\/nix\/db\/schema/);
    const odd = join(dir, 'odd');
    await mkdir(join(odd, 'nix/var/nix/db'), { recursive: true });
    await writeFile(join(odd, 'nix/var/nix/db/schema'), '11');
    expect(() => new LocalStore(odd).check()).toThrow(/has schema "11"; this version reads schema 10/);
  });

  it('another user (the NixOS service runs as a DynamicUser) reads a database nobody has open, without writing beside it', async () => {
    // A copy of the database alone: no -wal or -shm file, in a directory only root may write.
    const copy = join(dir, 'readonly-copy');
    await mkdir(join(copy, 'nix/var/nix/db'), { recursive: true });
    await copyFile(join(laptop, 'nix/var/nix/db/db.sqlite'), join(copy, 'nix/var/nix/db/db.sqlite'));
    await copyFile(join(laptop, 'nix/var/nix/db/schema'), join(copy, 'nix/var/nix/db/schema'));
    await runOk('chmod', ['-R', 'a+rX', dir]);
    const module = new URL('../../dist/store/local-store.js', `file://${CLI}`).href;
    const script = `import(${JSON.stringify(module)}).then(({ LocalStore }) => { const s = new LocalStore(${JSON.stringify(copy)}); s.check(); const f = s.lookup(${JSON.stringify(closure.root.slice(11, 43))}); console.log(JSON.stringify({ path: f && f.info().storePath, sigs: f && f.sigs })); })`;
    const res = await run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', script]);
    expect(res.code, res.stderr).toBe(0);
    expect(JSON.parse(res.stdout)).toEqual({ path: closure.root, sigs: [expect.stringMatching(/^upstream-1:/)] });
    expect(await runOk('ls', [join(copy, 'nix/var/nix/db')])).toBe('db.sqlite\nschema\n');
  });
});
