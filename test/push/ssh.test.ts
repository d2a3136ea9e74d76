import { symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkCache, cli, narFiles } from '../helpers/cache.js';
import { Nginx } from '../helpers/nginx.js';
import { buildClosure, generateKey, removeDir, substitute, tempDir, type CacheKey, type Closure } from '../helpers/nix.js';
import { NIX_CLIENTS } from '../helpers/nix-clients.js';
import { stopAll } from '../helpers/proc.js';
import { Sshd } from '../helpers/sshd.js';

let work: string;
let key: CacheKey;
let closure: Closure;
let sshd: Sshd;

beforeAll(async () => {
  work = await tempDir('ssh');
  key = await generateKey(work, 'builder-1');
  closure = await buildClosure(`ssh-${process.pid}-${Date.now()}`, [
    { name: 'leaf-a', size: 800_000 },
    { name: 'leaf-b', size: 300_000 },
  ]);
  sshd = await Sshd.start(join(work, 'sshd'));
});

afterAll(async () => {
  await sshd?.stop();
  await stopAll();
  await removeDir(work);
});

describe('push to ssh:// against a local sshd on a loopback port', () => {
  it(`streams the closure over ssh; nginx serves it and ${NIX_CLIENTS.map((c) => c.name).join(', ')} each substitute it; a second push sends nothing`, async () => {
    const cache = join(work, 'remote cache'); // a space, to exercise remote quoting
    const url = `ssh://root@127.0.0.1:${sshd.port}${cache}`;
    const env = { ...process.env, NIX_SSHOPTS: sshd.clientOpts };
    const res = await cli(['push', '--to', url, '--key-file', key.secretFile, '--root', 'pi', closure.root], { env });
    expect(res.stderr).toContain('3 to send');
    expect(res.code).toBe(0);
    const check = await checkCache(cache);
    expect(check.problems).toEqual([]);
    expect(check.narinfos.size).toBe(3);

    // nginx's config cannot take a root with a space: serve it through a symlink.
    await symlink(cache, join(work, 'served'));
    const nginx = await Nginx.start({ root: join(work, 'served'), workDir: join(work, 'nginx') });
    try {
      for (const client of NIX_CLIENTS) {
        const sub = await substitute(join(work, `client-${client.suite}`), [closure.root], nginx.url, { client, xdgCache: join(work, `xdg-${client.suite}`), trustedKeys: [key.publicKey] });
        expect(sub.code, `${client.name}: ${sub.stderr}`).toBe(0);
      }
    } finally {
      await nginx.stop();
    }

    const before = await narFiles(cache);
    // Options through --ssh-opt this time instead of NIX_SSHOPTS.
    const again = await cli(['push', '--to', url, `--ssh-opt=${sshd.clientOpts}`, '--key-file', key.secretFile, closure.root], { env: { ...process.env, NIX_SSHOPTS: '' } });
    expect(again.code).toBe(0);
    expect(again.stderr).toContain('3 already in');
    expect(await narFiles(cache)).toEqual(before);
  });

  it('an ssh target that refuses us: clear error, non-zero exit', async () => {
    const res = await cli(['push', '--to', `ssh://root@127.0.0.1:${sshd.port}${join(work, 'x')}`, closure.root], {
      env: { ...process.env, NIX_SSHOPTS: `-o IdentitiesOnly=yes -i /dev/null -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no` },
    });
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/preparing the cache directory.*failed/);
  });
});
