import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { compileCacheDir } from '../../src/cli/compile-cache.js';
import { stopAll } from '../helpers/proc.js';
import { startProxy } from '../helpers/proxy.js';

/** A fresh proxy reads the code the last one compiled (issue 23: CPU per path of a proxy started fresh). */
describe('the compile cache of a service', () => {
  let dir: string | undefined;
  afterEach(async () => {
    await stopAll();
    if (dir) await rm(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it('lives in the unit\'s cache directory, else the XDG cache, else ~/.cache; nowhere without a home', () => {
    expect(compileCacheDir({ CACHE_DIRECTORY: '/var/cache/nix-lan-cache:/other', XDG_CACHE_HOME: '/x', HOME: '/home/u' })).toBe('/var/cache/nix-lan-cache/compile-cache');
    expect(compileCacheDir({ XDG_CACHE_HOME: '/x', HOME: '/home/u' })).toBe('/x/nix-lan-cache/compile-cache');
    expect(compileCacheDir({ XDG_CACHE_HOME: 'relative', HOME: '/home/u' })).toBe('/home/u/.cache/nix-lan-cache/compile-cache');
    expect(compileCacheDir({ HOME: '/' })).toBeUndefined();
    expect(compileCacheDir({})).toBeUndefined();
  });

  it('a proxy that stops leaves its compiled modules there; the next one starts with the cache in place', async () => {
    dir = await mkdtemp(join(tmpdir(), 'nlc-compile-cache-'));
    const first = await startProxy(['--no-mdns', '--upstream', 'http://127.0.0.1:9/'], { env: { XDG_CACHE_HOME: dir } });
    expect((await fetch(`${first.url}/nix-cache-info`)).status).toBe(200);
    await first.stop();
    const cache = join(dir, 'nix-lan-cache', 'compile-cache');
    const written = await readdir(cache, { recursive: true });
    expect(written.length).toBeGreaterThan(0);
    const second = await startProxy(['--no-mdns', '--upstream', 'http://127.0.0.1:9/'], { env: { XDG_CACHE_HOME: dir } });
    expect((await fetch(`${second.url}/nix-cache-info`)).status).toBe(200);
    await second.stop();
  });

  it('the user\'s NODE_COMPILE_CACHE wins: nothing is written to ours', async () => {
    dir = await mkdtemp(join(tmpdir(), 'nlc-compile-cache-'));
    const theirs = join(dir, 'theirs');
    const p = await startProxy(['--no-mdns', '--upstream', 'http://127.0.0.1:9/'], { env: { XDG_CACHE_HOME: dir, NODE_COMPILE_CACHE: theirs } });
    await p.stop();
    expect(await readdir(dir)).not.toContain('nix-lan-cache');
    expect((await readdir(theirs, { recursive: true })).length).toBeGreaterThan(0);
  });
});
