import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readdir, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { CompleteMultipartUploadCommand, CreateMultipartUploadCommand, UploadPartCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, cli } from '../helpers/cache.js';
import { buildClosure, generateKey, removeDir, tempDir, type CacheKey, type Closure } from '../helpers/nix.js';
import { killProcessGroup, startProcess, stopAll, type RunResult } from '../helpers/proc.js';
import { until } from '../helpers/wait.js';
import { checkBucket, getObject, listKeys, putObject, startS3Engine, type S3Engine } from '../helpers/s3-engine.js';

const salt = `s3-bucket-${process.pid}-${Date.now()}`;
let engine: S3Engine;
let work: string;
let key: CacheKey;
let small: Closure;
const outputs: RunResult[] = [];

beforeAll(async () => {
  engine = await startS3Engine();
  work = await tempDir('s3-bucket');
  key = await generateKey(work, 'lab-1');
  small = await buildClosure(`${salt}-small`, [
    { name: 'leaf-a', size: 1_000_000 },
    { name: 'leaf-b', size: 300_000 },
    { name: 'leaf-c', size: 20_000 },
  ]);
});

afterAll(async () => {
  await stopAll();
  await engine?.stop();
  if (work) await removeDir(work);
});

/** The CLI with this engine's credentials in its environment, as an operator would run it. */
async function nlc(args: string[]): Promise<RunResult> {
  const res = await cli(args, { env: { ...process.env, ...engine.env } });
  outputs.push(res);
  return res;
}

const hashOf = (storePath: string) => storePath.slice('/nix/store/'.length, '/nix/store/'.length + 32);

describe('push to a private bucket on a real S3 engine (radosgw)', () => {
  it('sends the closure as a complete cache that an unsigned GET cannot read (403), with dotless NAR keys', async () => {
    await engine.createBucket('private');
    const url = engine.url('private');
    const res = await nlc(['push', '--to', url, '--key-file', key.secretFile, '--root', 'lab', small.root]);
    expect(res.stderr).toContain('4 to send');
    expect(res.code).toBe(0);

    const unsigned = await fetch(`${engine.endpoint}/private/${hashOf(small.root)}.narinfo`);
    expect(unsigned.status).toBe(403);

    const check = await checkBucket(engine, 'private');
    expect(check.problems).toEqual([]);
    expect(check.narinfos.size).toBe(4);
    for (const info of check.narinfos.values()) {
      expect(info.url).toMatch(/^nar\/[0-9a-z]{52}-xz$/);
      expect(info.sigs.some((s) => s.startsWith('lab-1:'))).toBe(true);
    }
    const roots = check.keys.filter((k) => k.startsWith('roots/lab/'));
    expect(roots).toHaveLength(1);
    expect((await getObject(engine, 'private', roots[0]!))!.toString().trim().split('\n').sort()).toEqual([...small.paths].sort());
    // The push's lease is gone once it ended.
    expect(check.keys.filter((k) => k.startsWith('pushing/'))).toEqual([]);
  });

  it('push again: nothing is sent, every path is already there', async () => {
    const before = await listKeys(engine, 'private', 'nar/');
    const res = await nlc(['push', '--to', engine.url('private'), '--key-file', key.secretFile, small.root]);
    expect(res.code).toBe(0);
    expect(res.stderr).toContain('4 already in');
    expect(res.stderr).toContain('0 to send');
    expect(await listKeys(engine, 'private', 'nar/')).toEqual(before);
  });

  it('verify --deep is clean, then catches a NAR overwritten with other bytes', async () => {
    const url = engine.url('private');
    const clean = await nlc(['verify', '--cache', url, '--trusted-public-key', key.publicKey, '--deep']);
    expect(clean.stdout).toContain('verify: 4 narinfos, 4 NARs, 0 problems');
    expect(clean.code).toBe(0);

    const check = await checkBucket(engine, 'private');
    const [victimHash, victim] = [...check.narinfos].find(([h]) => h !== hashOf(small.root))!;
    const original = (await getObject(engine, 'private', victim.url))!;
    await putObject(engine, 'private', victim.url, randomBytes(original.length));
    const caught = await nlc(['verify', '--cache', url, '--trusted-public-key', key.publicKey]);
    expect(caught.code).toBe(1);
    expect(caught.stdout).toContain(`wrong-hash: ${victimHash}.narinfo: ${victim.url} hashes to`);
    expect(caught.stdout).toContain('1 problems');
    await putObject(engine, 'private', victim.url, original);
    expect((await nlc(['verify', '--cache', url])).code).toBe(0);
  });
});

describe('gc on a bucket', () => {
  it("keeps the newest roots' closures, what a running push's lease holds, and aborts unfinished uploads", async () => {
    await engine.createBucket('gc-test');
    const url = engine.url('gc-test');
    const older = await buildClosure(`${salt}-older`, [{ name: 'old-a', size: 200_000 }, { name: 'old-b', size: 100_000 }]);
    const held = await buildClosure(`${salt}-held`, [{ name: 'held-a', size: 100_000 }]);
    const newer = await buildClosure(`${salt}-newer`, [{ name: 'new-a', size: 200_000 }]);
    for (const c of [older, held, newer]) expect((await nlc(['push', '--to', url, '--key-file', key.secretFile, '--root', 'lab', c.root])).code).toBe(0);
    // A push still running holds `held` (its lease), and one that died on this machine left half a multipart upload.
    await putObject(engine, 'gc-test', 'pushing/another-builder-1', JSON.stringify({ hashes: held.paths.map(hashOf), nars: [] }));
    const mp = await engine.client().send(new CreateMultipartUploadCommand({ Bucket: 'gc-test', Key: 'nar/unfinished' }));
    await engine.client().send(new UploadPartCommand({ Bucket: 'gc-test', Key: 'nar/unfinished', UploadId: mp.UploadId, PartNumber: 1, Body: randomBytes(1000) }));
    const dead = startProcess('true', []);
    await new Promise((r) => dead.once('exit', r));
    const deadLease = { host: hostname(), pid: dead.pid, hashes: older.paths.map(hashOf), nars: [], uploads: [{ key: 'nar/unfinished', uploadId: mp.UploadId }] };
    await putObject(engine, 'gc-test', 'pushing/dead-push', JSON.stringify(deadLease));

    // With the default grace period (an hour) everything just pushed is young: only the roots past --keep go.
    expect((await nlc(['gc', '--cache', url, '--keep', '1', '--keep-days', '0', '--dry-run'])).stdout).toContain('would delete 2 roots, 0 narinfos, 0 NARs');
    const dry = await nlc(['gc', '--cache', url, '--keep', '1', '--keep-days', '0', '--grace-minutes', '0', '--dry-run']);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain('would delete 2 roots, 3 narinfos, 3 NARs');
    expect((await checkBucket(engine, 'gc-test')).narinfos.size).toBe(3 + 2 + 2);

    const res = await nlc(['gc', '--cache', url, '--keep', '1', '--keep-days', '0', '--grace-minutes', '0']);
    expect(res.code).toBe(0);
    expect(res.stdout).toContain('deleted 2 roots, 3 narinfos, 3 NARs');
    expect(res.stdout).toContain('deleted nar/unfinished (unfinished multipart upload of a push that died)');
    expect(res.stdout).toContain('deleted pushing/dead-push (lease of a push that died)');
    const after = await checkBucket(engine, 'gc-test');
    expect(after.problems).toEqual([]);
    expect([...after.narinfos.keys()].sort()).toEqual([...newer.paths, ...held.paths].map(hashOf).sort());
    expect(after.keys.filter((k) => k.startsWith('roots/lab/'))).toHaveLength(1);
    // Aborted: its upload id is gone.
    const complete = engine.client().send(new CompleteMultipartUploadCommand({ Bucket: 'gc-test', Key: 'nar/unfinished', UploadId: mp.UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: 'x' }] } }));
    await expect(complete).rejects.toThrow();
    expect(await getObject(engine, 'gc-test', 'nar/unfinished')).toBeUndefined();
    expect((await listKeys(engine, 'gc-test', 'pushing/')).map((o) => o.key)).toEqual(['pushing/another-builder-1']);
    expect((await nlc(['verify', '--cache', url, '--trusted-public-key', key.publicKey])).stdout).toContain('0 problems, 0 orphaned NARs');
  });
});

describe('gc while a push runs', () => {
  it('gc --grace-minutes 0 during a push keeps what the push found present and the NARs it uploaded but has not published; the push completes its closure', async () => {
    await engine.createBucket('busy');
    const url = engine.url('busy');
    // The same salt: both closures share these two paths. Pushed unrooted, they are gc's to delete until a push holds them.
    const shared = [{ name: 'shared-a', size: 200_000 }, { name: 'shared-b', size: 100_000 }];
    const before = await buildClosure(`${salt}-busy`, shared);
    expect((await nlc(['push', '--to', url, '--key-file', key.secretFile, before.root])).code).toBe(0);
    const next = await buildClosure(`${salt}-busy`, [
      ...shared,
      ...Array.from({ length: 12 }, (_, i) => ({ name: `new-${i}`, size: 40_000 + i })),
      { name: 'new-multipart', size: 24_000_000 },
    ]);
    const pushing = startProcess(process.execPath, [CLI, 'push', '--jobs', '2', '--compression', 'zstd', '--to', url, '--key-file', key.secretFile, '--root', 'lab', next.root], {
      env: { ...process.env, ...engine.env },
    });
    let pushErr = '';
    pushing.stderr?.on('data', (d: Buffer) => (pushErr += d.toString()));
    pushing.stdout?.resume();
    const pushed = once(pushing, 'exit') as Promise<[number | null]>;
    const gcs: RunResult[] = [];
    const gc = async () => gcs.push(await nlc(['gc', '--cache', url, '--keep', '1', '--keep-days', '0', '--grace-minutes', '0']));
    // The push is stopped the moment it has a NAR in the bucket whose narinfo it has not written yet (the root's waits for the large NAR).
    const unpublished = await until('a NAR uploaded and not yet published', 60_000, async () => {
      if (pushing.exitCode !== null) return [];
      const keys = (await listKeys(engine, 'busy')).map((o) => o.key);
      const nars = keys.filter((k) => k.startsWith('nar/'));
      if (nars.length <= keys.filter((k) => k.endsWith('.narinfo')).length) return false;
      process.kill(pushing.pid!, 'SIGSTOP');
      return nars;
    });
    try {
      expect(unpublished.length, 'the push ended before it could be caught with a NAR not yet published').toBeGreaterThan(0);
      await gc();
    } finally {
      process.kill(pushing.pid!, 'SIGCONT');
    }
    // The stopped push held its closure and its NARs (zstd; the first push's are xz): gc deleted only the first closure's own root.
    expect(gcs[0]!.stdout).toContain(`deleted ${hashOf(before.root)}.narinfo`);
    expect(gcs[0]!.stdout).toContain('deleted 0 roots, 1 narinfos');
    expect(gcs[0]!.stdout).not.toContain('-zst');
    for (let i = 0; i < 40 && pushing.exitCode === null; i++) await gc();
    const [code] = await pushed;
    expect(code, pushErr).toBe(0);
    for (const g of gcs) expect(g.code, g.stderr).toBe(0);

    const check = await checkBucket(engine, 'busy');
    expect(check.problems).toEqual([]);
    expect([...check.narinfos.keys()].sort()).toEqual(next.paths.map(hashOf).sort());
    // Once the push ended its closure is a root's, and gc keeps it (only the first root's NAR, if still there, goes).
    const after = await nlc(['gc', '--cache', url, '--keep', '1', '--keep-days', '0', '--grace-minutes', '0']);
    expect(after.stdout).toContain('deleted 0 roots, 0 narinfos');
    expect(after.stdout).not.toContain('-zst');
    expect((await checkBucket(engine, 'busy')).narinfos.size).toBe(next.paths.length);
  });
});

describe('a push to a bucket cut half-way', () => {
  it('kill -9 mid-push (a multipart NAR among them) leaves no narinfo without its NAR; the next push completes it', async () => {
    await engine.createBucket('cut');
    const url = engine.url('cut');
    const large = await buildClosure(`${salt}-large`, [
      ...Array.from({ length: 5 }, (_, i) => ({ name: `big-${i}`, size: 3_000_000 })),
      { name: 'multipart', size: 20_000_000 },
    ]);
    const child = startProcess(process.execPath, [CLI, 'push', '--jobs', '2', '--compression', 'zstd', '--to', url, '--key-file', key.secretFile, large.root], {
      detached: true,
      env: { ...process.env, ...engine.env },
    });
    let seen = 0;
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && child.exitCode === null) {
      seen = (await listKeys(engine, 'cut')).filter((o) => /^[0-9a-z]{32}\.narinfo$/.test(o.key)).length;
      if (seen >= 2) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(child.exitCode).toBe(null);
    await killProcessGroup(child);
    const afterKill = await checkBucket(engine, 'cut');
    expect(afterKill.problems).toEqual([]);
    expect(afterKill.narinfos.size).toBeGreaterThanOrEqual(2);
    expect(afterKill.narinfos.size).toBeLessThan(7);
    expect(afterKill.narinfos.has(hashOf(large.root))).toBe(false);

    const rerun = await nlc(['push', '--compression', 'zstd', '--to', url, '--key-file', key.secretFile, large.root]);
    expect(rerun.code).toBe(0);
    expect(rerun.stderr).toContain(`${afterKill.narinfos.size} already in`);
    const done = await checkBucket(engine, 'cut');
    expect(done.problems).toEqual([]);
    expect(done.narinfos.size).toBe(7);
    const multipart = [...done.narinfos.values()].find((i) => (i.fileSize ?? 0) > 16 * 1024 * 1024);
    expect(multipart?.url).toMatch(/^nar\/[0-9a-z]{52}-zst$/);
    // The killed push's spool files are gone (removed by the next push), and gc aborts what it left in the bucket.
    expect((await readdir(tmpdir())).filter((n) => n.startsWith(`nlc-s3-spool-${child.pid}-`))).toEqual([]);
    const gc = await nlc(['gc', '--cache', url, '--keep', '1', '--grace-minutes', '0']);
    expect(gc.code).toBe(0);
    expect(gc.stdout).toMatch(/deleted pushing\/\S+ \(lease of a push that died\)/);
    expect(await listKeys(engine, 'cut', 'pushing/')).toEqual([]);
    const verified = await nlc(['verify', '--cache', url, '--deep', '--trusted-public-key', key.publicKey]);
    expect(verified.stdout).toMatch(/verify: 7 narinfos, \d+ NARs, 0 problems/);
    expect(verified.code).toBe(0);
  });
});

describe('secrets', () => {
  it('no command printed the secret key', () => {
    expect(outputs.length).toBeGreaterThan(5);
    for (const o of outputs) expect(`${o.stdout}${o.stderr}`).not.toContain(engine.secretAccessKey);
  });
});

describe('credentials as the AWS tools read them', () => {
  it('a profile of the shared credentials file, named by profile= in the URL or by AWS_PROFILE, or its default profile', async () => {
    const file = join(work, 'aws-credentials');
    await writeFile(file, `[default]\naws_access_key_id = ${engine.accessKeyId}\naws_secret_access_key = ${engine.secretAccessKey}\n\n[lab]\naws_access_key_id = ${engine.accessKeyId}\naws_secret_access_key = ${engine.secretAccessKey}\n\n[wrong]\naws_access_key_id = ${engine.accessKeyId}\naws_secret_access_key = not-the-secret\n`, { mode: 0o600 });
    const env: NodeJS.ProcessEnv = { ...process.env, HOME: join(work, 'no-home'), AWS_SHARED_CREDENTIALS_FILE: file, AWS_CONFIG_FILE: join(work, 'no-config') };
    for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE']) delete env[k];
    const verify = (url: string, extra: NodeJS.ProcessEnv = {}) => cli(['verify', '--cache', url], { env: { ...env, ...extra } });
    const byUrl = await verify(engine.url('private', 'profile=lab'));
    expect(byUrl.stdout, byUrl.stderr).toContain('0 problems');
    expect((await verify(engine.url('private'), { AWS_PROFILE: 'lab' })).code).toBe(0);
    expect((await verify(engine.url('private'))).code).toBe(0);
    // The profile named wins over the default one, and over keys in the environment (as the AWS SDK does).
    const wrong = await verify(engine.url('private', 'profile=wrong'), { AWS_ACCESS_KEY_ID: engine.accessKeyId, AWS_SECRET_ACCESS_KEY: engine.secretAccessKey });
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toContain('HTTP 403');
    const missing = await verify(engine.url('private', 'profile=nope'));
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/no AWS credentials for s3:\/\/private\?endpoint=.*&profile=nope \(profile "nope": /);
    for (const r of [byUrl, wrong, missing]) expect(`${r.stdout}${r.stderr}`).not.toContain(engine.secretAccessKey);
  });
});

describe('bad credentials and buckets', () => {
  it('missing credentials, a wrong secret and a missing bucket stop with a clear message (exit 2), the secret never shown', async () => {
    const env: NodeJS.ProcessEnv = { ...process.env, HOME: join(work, 'no-home') };
    for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE', 'AWS_SHARED_CREDENTIALS_FILE', 'AWS_CONFIG_FILE']) delete env[k];
    const none = await cli(['verify', '--cache', engine.url('private')], { env });
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/no AWS credentials for s3:\/\/private\?endpoint=.*set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/);

    const wrongSecret = `wrong-${randomBytes(8).toString('hex')}`;
    const wrong = await cli(['push', '--to', engine.url('private'), small.root], { env: { ...process.env, AWS_ACCESS_KEY_ID: engine.accessKeyId, AWS_SECRET_ACCESS_KEY: wrongSecret } });
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toContain('HTTP 403');
    expect(wrong.stderr).toContain('check the credentials');
    expect(wrong.stderr).not.toContain(wrongSecret);

    const missing = await nlc(['gc', '--cache', engine.url('no-such-bucket')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('the bucket does not exist');
  });
});
