import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkCache, CLI, cli, narFiles } from '../helpers/cache.js';
import { Nginx } from '../helpers/nginx.js';
import { buildClosure, generateKey, nixEnv, removeDir, substitute, tempDir, type CacheKey, type Closure } from '../helpers/nix.js';
import { NIX_CLIENTS } from '../helpers/nix-clients.js';
import { run, startProcess, stopAll, killProcessGroup } from '../helpers/proc.js';

const salt = `push-${process.pid}-${Date.now()}`;
let work: string;
let key: CacheKey;
let small: Closure;
const servers: Nginx[] = [];

beforeAll(async () => {
  work = await tempDir('push');
  key = await generateKey(work, 'builder-1');
  small = await buildClosure(`${salt}-small`, [
    { name: 'leaf-a', size: 1_000_000 },
    { name: 'leaf-b', size: 500_000 },
    { name: 'leaf-c', size: 20_000 },
  ]);
});

afterAll(async () => {
  for (const s of servers) await s.stop();
  await stopAll();
  await removeDir(work);
});

async function serve(dir: string, name: string): Promise<Nginx> {
  const n = await Nginx.start({ root: dir, workDir: join(work, `nginx-${name}`) });
  servers.push(n);
  return n;
}

describe('push into a directory served by nginx', () => {
  let xzNginx: Nginx;

  it('writes a valid xz cache signed by our key; `verify --deep` finds no problem', async () => {
    const cache = join(work, 'cache-xz');
    const res = await cli(['push', '--to', cache, '--key-file', key.secretFile, small.root]);
    expect(res.stderr).toContain('4 to send');
    expect(res.code).toBe(0);
    expect(await readFile(join(cache, 'nix-cache-info'), 'utf8')).toBe('StoreDir: /nix/store\n');
    const check = await checkCache(cache);
    expect(check.problems).toEqual([]);
    expect(check.narinfos.size).toBe(4);
    for (const info of check.narinfos.values()) {
      expect(info.compression).toBe('xz');
      expect(info.url).toMatch(/^nar\/[0-9a-z]{52}\.nar\.xz$/);
      expect(info.sigs.some((s) => s.startsWith('builder-1:'))).toBe(true);
    }
    const ours = await cli(['verify', '--cache', cache, '--trusted-public-key', key.publicKey, '--deep']);
    expect(ours.stdout).toContain('0 problems');
    expect(ours.code).toBe(0);
    xzNginx = await serve(cache, 'xz');
  });

  for (const client of NIX_CLIENTS) {
    it(`${client.name} substitutes the pushed closure, nix path-info --sigs shows our signature and nix store verify checks it; without our key it refuses`, async () => {
      const before = (await xzNginx.narHits()).length;
      const store = join(work, `client-xz-${client.suite}`);
      const sub = await substitute(store, [small.root], xzNginx.url, { client, xdgCache: join(work, `xdg-xz-${client.suite}`), trustedKeys: [key.publicKey] });
      expect(sub.stderr).not.toMatch(/error/);
      expect(sub.code).toBe(0);
      expect((await xzNginx.narHits()).length - before).toBe(4);
      // The client store now holds the closure with our signature, and this Nix checks it.
      const nix = (args: string[]) => {
        const [cmd, ...rest] = client.wrap(['nix', ...args]);
        return run(cmd!, rest, { env: nixEnv() });
      };
      const info = await nix(['path-info', '--store', store, '--sigs', '-r', small.root]);
      expect(info.code, info.stderr).toBe(0);
      expect(info.stdout.trim().split('\n')).toHaveLength(4);
      for (const line of info.stdout.trim().split('\n')) expect(line).toContain('builder-1:');
      const verify = await nix(['store', 'verify', '--store', store, '-r', '--trusted-public-keys', key.publicKey, small.root]);
      expect(verify.stderr).not.toMatch(/untrusted|lacks a valid signature|error/);
      expect(verify.code).toBe(0);
      const other = await generateKey(work, `someone-else-${client.suite}-1`);
      const verifyOther = await nix(['store', 'verify', '--store', store, '-r', '--trusted-public-keys', other.publicKey, small.root]);
      expect(verifyOther.code).not.toBe(0);
      // And a client that does not trust the key refuses it.
      const untrusted = await substitute(join(work, `client-untrusted-${client.suite}`), [small.root], xzNginx.url, { client, xdgCache: join(work, `xdg-u-${client.suite}`), trustedKeys: [] });
      expect(untrusted.code).not.toBe(0);
    });
  }

  it('push again: only existence checks, no NAR written', async () => {
    const cache = join(work, 'cache-xz');
    const before = await narFiles(cache);
    const topBefore = (await readdir(cache)).sort();
    const res = await cli(['push', '--to', cache, '--key-file', key.secretFile, small.root]);
    expect(res.code).toBe(0);
    expect(res.stderr).toContain('4 already in');
    expect(res.stderr).toContain('0 to send');
    expect(await narFiles(cache)).toEqual(before);
    expect((await readdir(cache)).sort()).toEqual(topBefore);
  });

  it('--dry-run lists what would be sent and writes nothing', async () => {
    const cache = join(work, 'cache-dry');
    const res = await cli(['push', '--dry-run', '--to', cache, small.root]);
    expect(res.code).toBe(0);
    expect(res.stderr).toContain(`would push ${small.root}`);
    expect(await readdir(cache).catch(() => 'absent')).toBe('absent');
  });

  it(`--compression zstd, out-links and --root: ${NIX_CLIENTS.map((c) => c.name).join(', ')} each substitute from .nar.zst files; the root lists the closure`, async () => {
    const cache = join(work, 'cache-zst');
    const outLink = join(work, 'result');
    await run('ln', ['-s', small.root, outLink]);
    const res = await cli(['push', '--to', cache, '--compression', 'zstd', '--key-file', key.secretFile, '--root', 'pi', outLink]);
    expect(res.code).toBe(0);
    const check = await checkCache(cache);
    expect(check.problems).toEqual([]);
    for (const info of check.narinfos.values()) expect(info.url).toMatch(/\.nar\.zst$/);
    const roots = await readdir(join(cache, 'roots', 'pi'));
    expect(roots).toHaveLength(1);
    expect((await readFile(join(cache, 'roots', 'pi', roots[0]!), 'utf8')).trim().split('\n').sort()).toEqual([...small.paths].sort());
    const nginx = await serve(cache, 'zst');
    // Nix from 2.22 on decodes only the compression the narinfo names: each Nix reads the .nar.zst files.
    for (const client of NIX_CLIENTS) {
      const sub = await substitute(join(work, `client-zst-${client.suite}`), [small.root], nginx.url, { client, xdgCache: join(work, `xdg-zst-${client.suite}`), trustedKeys: [key.publicKey] });
      expect(sub.code, `${client.name}: ${sub.stderr}`).toBe(0);
    }
    const hits = (await nginx.narHits()).map((h) => h.uri);
    expect(hits).toHaveLength(4 * NIX_CLIENTS.length);
    expect(hits.every((u) => u.endsWith('.nar.zst'))).toBe(true);
  });
});

describe('interrupted push', () => {
  it(`kill -9 mid-push of a large closure leaves no narinfo without its NAR; rerun finishes and ${NIX_CLIENTS.map((c) => c.name).join(', ')} each substitute it`, async () => {
    const large = await buildClosure(`${salt}-large`, Array.from({ length: 8 }, (_, i) => ({ name: `big-${i}`, size: 5_000_000 })));
    const cache = join(work, 'cache-kill');
    const child = startProcess(process.execPath, [CLI, 'push', '--jobs', '2', '--to', cache, '--key-file', key.secretFile, large.root], { detached: true });
    // Kill once some, but not all, narinfos are visible.
    let seen = 0;
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && child.exitCode === null) {
      seen = (await readdir(cache).catch(() => [] as string[])).filter((n) => /^[0-9a-z]{32}\.narinfo$/.test(n)).length; // published ones, not .tmp- files
      if (seen >= 2) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(child.exitCode).toBe(null);
    await killProcessGroup(child); // push and its nix-store/xz children, all at once
    const afterKill = await checkCache(cache);
    expect(afterKill.problems).toEqual([]);
    expect(afterKill.narinfos.size).toBeGreaterThanOrEqual(2);
    expect(afterKill.narinfos.size).toBeLessThan(9);
    expect(afterKill.narinfos.has(large.root.slice(11, 43))).toBe(false);

    const rerun = await cli(['push', '--to', cache, '--key-file', key.secretFile, large.root]);
    expect(rerun.code).toBe(0);
    expect(rerun.stderr).toContain(`${afterKill.narinfos.size} already in`);
    const done = await checkCache(cache);
    expect(done.problems).toEqual([]);
    expect(done.narinfos.size).toBe(9);
    const nginx = await serve(cache, 'kill');
    for (const client of NIX_CLIENTS) {
      const sub = await substitute(join(work, `client-kill-${client.suite}`), [large.root], nginx.url, { client, xdgCache: join(work, `xdg-kill-${client.suite}`), trustedKeys: [key.publicKey] });
      expect(sub.code, `${client.name}: ${sub.stderr}`).toBe(0);
    }
  });
});
