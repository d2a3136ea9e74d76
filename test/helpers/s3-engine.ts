import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { CreateBucketCommand, GetObjectCommand, ListObjectsV2Command, PutBucketPolicyCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { sha256FromBytes } from '../../src/protocol/hash.js';
import { parseNarInfo, type NarInfo } from '../../src/protocol/narinfo.js';
import { freePort } from './ports.js';
import { removeDir, tempDir } from './nix.js';
import { startProcess, stopProcess } from './proc.js';

/**
 * A real S3 engine for a test file: Ceph's radosgw from Debian unstable,
 * standalone (DBStore + POSIX driver), on 127.0.0.1 on a free port, with its
 * data in a temp dir, from the chroot `.ci/s3-engine` makes and keeps. A
 * missing engine is an error at start, with the reason: no test is skipped.
 */
export interface S3Engine {
  /** http://127.0.0.1:PORT */
  endpoint: string;
  port: number;
  accessKeyId: string;
  secretAccessKey: string;
  /** The engine's files (objects under posix/). */
  dir: string;
  /** AWS_* variables that give a command this engine's credentials. */
  env: Record<string, string>;
  /** Nix's URL for a bucket on this engine. */
  url(bucket: string, extra?: string): string;
  /** Makes a bucket; `publicReadWrite` lets anyone get, put and list (for Nix 2.34, which is built without AWS and sends unsigned requests). */
  createBucket(name: string, opts?: { publicReadWrite?: boolean }): Promise<void>;
  client(): S3Client;
  stop(): Promise<void>;
}

const SCRIPT = fileURLToPath(new URL('../../.ci/s3-engine', import.meta.url));

function engineRoot(): string {
  let out: string;
  try {
    out = execFileSync('bash', [SCRIPT, '--check'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: string };
    throw new Error(`the S3 engine the tests need is not there (make it with: bash .ci/s3-engine):\n${e.stderr ?? ''}`);
  }
  const m = /^s3-engine radosgw (\S+) (\S+)$/m.exec(out);
  if (!m) throw new Error(`unexpected output of .ci/s3-engine --check:\n${out}`);
  return m[2]!;
}

/** The command run inside the engine's chroot, with /tmp (the test's files) bound. */
function inChroot(root: string, cmd: string[]): string[] {
  const script = 'r=$1; shift; mount --bind /tmp "$r/tmp" && mount -t proc proc "$r/proc" && mount --rbind /dev "$r/dev" && exec chroot "$r" "$@"';
  return ['unshare', '-m', '--propagation', 'private', 'sh', '-c', script, 'sh', root, ...cmd];
}

/**
 * `radosgw-admin user create`. With several engines starting at once (test
 * files in parallel), radosgw-admin sometimes hangs on its way out after the
 * user is written and printed (about 1 run in 10 measured here, never when run
 * alone). So: done when it exits 0, or when it has printed the user with our
 * access key and has not exited 2 s later (then it is killed by its PID).
 */
async function createUser(root: string, conf: string, accessKeyId: string, secretAccessKey: string): Promise<void> {
  const cmd = inChroot(root, ['radosgw-admin', '--no-mon-config', '-c', conf, '-n', 'client.rgw', 'user', 'create', '--uid', 'nlc', '--display-name', 'nix-lan-cache tests', '--access-key', accessKeyId, '--secret-key', secretAccessKey]);
  const child = startProcess(cmd[0]!, cmd.slice(1));
  let stdout = '';
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  const printed = new Promise<void>((resolve) =>
    child.stdout?.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (userPrinted(stdout, accessKeyId)) resolve();
    }),
  );
  const timeout = AbortSignal.timeout(60_000);
  const timedOut = once(timeout, 'abort');
  const first = await Promise.race([exited.then(([code, signal]) => ({ code, signal })), printed.then(() => 'printed' as const), timedOut.then(() => 'timeout' as const)]);
  if (first === 'printed') {
    const late = await Promise.race([exited.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), 2000))]);
    if (late) await stopProcess(child, 'SIGKILL');
    return;
  }
  if (first === 'timeout') {
    await stopProcess(child, 'SIGKILL');
    throw new Error(`radosgw-admin user create did not finish within 60 s:\n${stderr}`);
  }
  if (first.code !== 0 || !userPrinted(stdout, accessKeyId)) throw new Error(`radosgw-admin user create exited ${first.code ?? first.signal}:\n${stderr}`);
}

function userPrinted(stdout: string, accessKeyId: string): boolean {
  try {
    const user = JSON.parse(stdout) as { keys?: Array<{ access_key?: string }> };
    return user.keys?.some((k) => k.access_key === accessKeyId) === true;
  } catch {
    return false;
  }
}

export async function startS3Engine(): Promise<S3Engine> {
  const root = engineRoot();
  const dir = await tempDir('rgw');
  const port = await freePort();
  for (const d of ['posix', 'db', 'run']) await mkdir(`${dir}/${d}`);
  const conf = `${dir}/ceph.conf`;
  await writeFile(
    conf,
    [
      '[global]',
      'fsid = 00000000-0000-4000-8000-000000000025',
      'auth_cluster_required = none',
      'auth_service_required = none',
      'auth_client_required = none',
      '[client.rgw]',
      'rgw backend store = dbstore',
      'rgw config store = dbstore',
      'rgw filter = posix',
      `rgw posix base path = ${dir}/posix`,
      `rgw posix database root = ${dir}/db`,
      `dbstore db dir = ${dir}/db`,
      `dbstore config uri = file:${dir}/db/config.db`,
      `rgw frontends = beast endpoint=127.0.0.1:${port}`,
      `log file = ${dir}/rgw.log`,
      `run dir = ${dir}/run`,
      `admin socket = ${dir}/run/rgw.asok`,
      '',
    ].join('\n'),
  );
  const accessKeyId = `NLC${randomBytes(8).toString('hex').toUpperCase()}`;
  const secretAccessKey = randomBytes(24).toString('base64url');
  try {
    await createUser(root, conf, accessKeyId, secretAccessKey);
  } catch (err) {
    await removeDir(dir);
    throw err;
  }
  const cmd = inChroot(root, ['radosgw', '-f', '-c', conf, '--no-mon-config', '-n', 'client.rgw']);
  const child: ChildProcess = startProcess(cmd[0]!, cmd.slice(1));
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  child.stdout?.resume();
  const endpoint = `http://127.0.0.1:${port}`;
  // Ready when it answers S3 (an anonymous ListBuckets); bounded in time and count.
  const deadline = Date.now() + 30_000;
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`radosgw exited ${child.exitCode}: ${stderr}`);
    const ok = await fetch(endpoint, { signal: AbortSignal.timeout(1000) }).then((r) => r.status < 500, () => false);
    if (ok) break;
    if (Date.now() > deadline || i > 600) {
      await stopProcess(child);
      throw new Error(`radosgw did not answer on ${endpoint} within 30 s: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  let client: S3Client | undefined;
  const makeClient = () =>
    (client ??= new S3Client({ region: 'us-east-1', endpoint, forcePathStyle: true, credentials: { accessKeyId, secretAccessKey }, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' }));
  return {
    endpoint,
    port,
    accessKeyId,
    secretAccessKey,
    dir,
    env: { AWS_ACCESS_KEY_ID: accessKeyId, AWS_SECRET_ACCESS_KEY: secretAccessKey },
    url: (bucket, extra) => `s3://${bucket}?endpoint=${endpoint}&region=us-east-1${extra ? `&${extra}` : ''}`,
    async createBucket(name, opts = {}) {
      await makeClient().send(new CreateBucketCommand({ Bucket: name }));
      if (opts.publicReadWrite) {
        const policy = {
          Version: '2012-10-17',
          Statement: [{ Effect: 'Allow', Principal: '*', Action: ['s3:GetObject', 's3:PutObject', 's3:ListBucket', 's3:GetBucketLocation'], Resource: [`arn:aws:s3:::${name}`, `arn:aws:s3:::${name}/*`] }],
        };
        await makeClient().send(new PutBucketPolicyCommand({ Bucket: name, Policy: JSON.stringify(policy) }));
      }
    },
    client: makeClient,
    async stop() {
      client?.destroy();
      await stopProcess(child);
      await removeDir(dir);
    },
  };
}

/** Every key in a bucket (under `prefix`), straight from the engine. */
export async function listKeys(engine: S3Engine, bucket: string, prefix = ''): Promise<Array<{ key: string; size: number }>> {
  const out: Array<{ key: string; size: number }> = [];
  let token: string | undefined;
  for (let page = 0; page < 1000; page++) {
    const res = await engine.client().send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ...(token ? { ContinuationToken: token } : {}) }));
    for (const o of res.Contents ?? []) out.push({ key: o.Key!, size: o.Size ?? 0 });
    if (!res.IsTruncated) break;
    token = res.NextContinuationToken;
  }
  return out;
}

export async function getObject(engine: S3Engine, bucket: string, key: string): Promise<Buffer | undefined> {
  try {
    const res = await engine.client().send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return Buffer.from(await res.Body!.transformToByteArray());
  } catch (err) {
    if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return undefined;
    throw err;
  }
}

export async function putObject(engine: S3Engine, bucket: string, key: string, body: Buffer | string): Promise<void> {
  await engine.client().send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
}

/**
 * Independent of the code under test (apart from the narinfo parser): every
 * narinfo in the bucket has its NAR with its FileSize and FileHash, and
 * every reference has a narinfo. A bucket that passes serves complete closures.
 */
export async function checkBucket(engine: S3Engine, bucket: string): Promise<{ narinfos: Map<string, NarInfo>; problems: string[]; keys: string[] }> {
  const keys = (await listKeys(engine, bucket)).map((o) => o.key);
  const narinfos = new Map<string, NarInfo>();
  const problems: string[] = [];
  for (const key of keys.filter((k) => /^[0-9a-z]{32}\.narinfo$/.test(k))) {
    try {
      narinfos.set(key.slice(0, 32), parseNarInfo((await getObject(engine, bucket, key))!.toString('utf8')));
    } catch (err) {
      problems.push(`${key}: ${String(err)}`);
    }
  }
  for (const [hash, info] of narinfos) {
    const nar = await getObject(engine, bucket, info.url);
    if (!nar) {
      problems.push(`${hash}: NAR ${info.url} missing`);
      continue;
    }
    if (nar.length !== info.fileSize) problems.push(`${hash}: NAR size ${nar.length} != ${info.fileSize}`);
    const got = sha256FromBytes(createHash('sha256').update(nar).digest());
    if (got !== info.fileHash) problems.push(`${hash}: NAR hash ${got} != ${info.fileHash}`);
    for (const ref of info.references) if (!narinfos.has(ref.slice(0, 32))) problems.push(`${hash}: reference ${ref} has no narinfo`);
  }
  if (narinfos.size > 0 && !(await getObject(engine, bucket, 'nix-cache-info'))?.toString().includes('StoreDir: /nix/store')) problems.push('nix-cache-info missing or wrong');
  return { narinfos, problems, keys };
}
