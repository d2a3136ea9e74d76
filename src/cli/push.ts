import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { ConfigError, errorMessage } from '../errors.js';
import { KeyError, parseSecretKey, type SecretKey } from '../protocol/signing.js';
import { parseCommandArgs, parseCount } from './args.js';
import { LocalTarget } from '../push/local-target.js';
import { COMPRESSIONS, type Compression } from '../push/nar.js';
import { formatBytes } from '../format.js';
import { Progress } from '../push/progress.js';
import { push } from '../push/push.js';
import { parseSshUrl, splitSshOpts, SshTarget } from '../push/ssh-target.js';
import { TargetError, type CacheTarget } from '../push/target.js';
import { isS3Url, parseS3Url } from '../s3/url.js';

/** Credentials that cannot be found, or a bucket that refuses us before anything was sent: a setup problem (exit 2), not a failed push. */
function isSetupError(err: unknown): boolean {
  const name = (err as { name?: unknown } | null)?.name;
  return name === 'S3CredentialsError' || (name === 'S3Error' && /^opening the bucket/.test(errorMessage(err)));
}

const HELP = `usage: nix-lan-cache push --to DIR|ssh://[user@]host[:port]/path|s3://BUCKET?endpoint=URL&region=R [options] PATH...

Pushes the closures of PATH (store paths or out-links such as ./result) into a
static binary cache, sending only what is missing.

options:
  --to TARGET            cache directory, ssh://[user@]host[:port]/path, or an S3
                         bucket s3://BUCKET?endpoint=URL&region=R[&profile=P]
                         (credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
                         AWS_PROFILE or the shared credentials file; docs/lab.md)
  --key-file FILE        Nix secret key file (as for secret-key-files) to sign with
  --compression xz|zstd  NAR compression (default xz)
  --root NAME            record the pushed closure as roots/NAME/<timestamp> for gc
  --jobs N               NARs compressed and sent at a time (default: CPU count;
                         to a bucket at least 8)
  --ssh-opt OPTS         extra ssh options, split on spaces, repeatable (NIX_SSHOPTS is read too)
  --dry-run              say what would be sent, write nothing
  --quiet                no progress output
`;

async function loadKey(file: string): Promise<SecretKey> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`push: cannot read key file ${file}: ${errorMessage(err)}`);
  }
  try {
    return parseSecretKey(text);
  } catch (err) {
    if (err instanceof KeyError) throw new ConfigError(`push: ${file} is not a Nix secret key file: ${err.message}`);
    throw err;
  }
}

export async function makeTarget(to: string, sshOpts: string[]): Promise<CacheTarget> {
  if (isS3Url(to)) {
    // Loaded only for a bucket: the AWS SDK is large (docs/dependencies.md).
    const [{ Bucket }, { S3Target }] = await Promise.all([import('../s3/bucket.js'), import('../push/s3-target.js')]);
    return new S3Target(new Bucket(parseS3Url(to)));
  }
  if (to.startsWith('ssh://')) return new SshTarget(parseSshUrl(to), [...splitSshOpts(process.env.NIX_SSHOPTS), ...sshOpts.flatMap(splitSshOpts)]);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(to)) {
    if (to.startsWith('file://')) return new LocalTarget(decodeURIComponent(to.slice('file://'.length).split('?')[0]!));
    throw new ConfigError(`push: unsupported target ${JSON.stringify(to)}: use a directory, ssh://[user@]host/path or s3://BUCKET?endpoint=URL&region=R`);
  }
  return new LocalTarget(to);
}

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(
    'push',
    argv,
    {
      to: { type: 'string' },
      'key-file': { type: 'string' },
      compression: { type: 'string' },
      root: { type: 'string' },
      jobs: { type: 'string' },
      'ssh-opt': { type: 'string', multiple: true },
      'dry-run': { type: 'boolean' },
      quiet: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    true,
  );
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (!values.to) throw new ConfigError('push: --to is required (a cache directory, ssh://[user@]host/path or s3://BUCKET?endpoint=URL&region=R)');
  if (positionals.length === 0) throw new ConfigError('push: give at least one store path or out-link to push');
  const compression = (values.compression ?? 'xz') as Compression;
  if (!(compression in COMPRESSIONS)) throw new ConfigError(`push: --compression must be xz or zstd, got ${JSON.stringify(values.compression)}`);
  // A bucket is a network away: more NARs in flight than cores keep it busy while small ones compress.
  const jobs = parseCount('push', 'jobs', values.jobs, isS3Url(values.to) ? Math.max(8, availableParallelism()) : availableParallelism(), 1);
  // Read the key before touching the target: a bad key must not leave anything behind.
  const key = values['key-file'] ? await loadKey(values['key-file']) : undefined;
  const progress = new Progress(process.stderr, values.quiet === true);
  if (!key) progress.log('warning: no --key-file: narinfos carry only the signatures the local store already has');
  const target = await makeTarget(values.to, values['ssh-opt'] ?? []);
  try {
    const res = await push({
      target,
      paths: positionals,
      compression,
      dryRun: values['dry-run'] === true,
      jobs,
      progress,
      ...(key ? { key } : {}),
      ...(values.root !== undefined ? { rootName: values.root } : {}),
    });
    if (!values['dry-run']) {
      progress.log(
        `done: ${res.pushed.length} paths sent (${formatBytes(res.narBytes)} NAR, ${formatBytes(res.fileBytes)} compressed), ${res.alreadyThere} already there` +
          (res.rootFile ? `; root ${res.rootFile}` : ''),
      );
    }
    return 0;
  } catch (err) {
    if (err instanceof ConfigError || err instanceof TargetError || isSetupError(err)) throw new ConfigError(errorMessage(err));
    process.stderr.write(`nix-lan-cache push: ${errorMessage(err)}\n`);
    process.stderr.write('nix-lan-cache push: the cache is still consistent: every narinfo in it points to a complete NAR; run push again to finish\n');
    return 1;
  } finally {
    await target.close();
  }
}
