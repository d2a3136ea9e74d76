import type { Logger } from 'pino';
import { requireCacheDir } from './args.js';
import { createLogger } from '../log.js';
import { createOrigin } from '../origins/s3-origin.js';
import { TrustedKeys } from '../protocol/signing.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, errorMessage } from '../errors.js';
import { LocalTarget } from '../push/local-target.js';
import { isS3Url, parseS3Url } from '../s3/url.js';
import { LocalFillStore, S3FillStore, type FillStore } from '../fill/store.js';
import { buildFillApp } from '../fill/app.js';
import { CacheSize, removeDeadFillTemps } from '../fill/cache-size.js';
import { resolveFillConfig, type FillConfig } from '../fill/config.js';
import { parseFillFlags } from './fill-flags.js';
import { Filler } from '../fill/filler.js';
import { FillStats } from '../fill/stats.js';
import { runService } from './service.js';

const HELP = `usage: nix-lan-cache fill --cache DIR|s3://BUCKET?endpoint=URL&region=R [options]

Runs on the Pi behind nginx: what nginx does not find in the static cache
directory (try_files $uri @fill) comes here. A narinfo miss is looked up on
the upstreams; one validly signed by a trusted key is answered at once, and
its NAR is streamed to the client while it is written, checked (FileHash,
NarHash, NarSize) and published in push's layout: NAR first, then narinfo.
See docs/fill.md.

  --cache DIR                 the static binary cache nginx serves (required);
                              or a bucket, s3://BUCKET?endpoint=URL&region=R:
                              then fill serves hits from it too (docs/lab.md)
  --spool-dir DIR             with a bucket: where downloads are written before
                              they are uploaded (default $STATE_DIRECTORY, else
                              the temp dir)
  --listen HOST:PORT          where to listen (default 127.0.0.1:37516)
  --upstream URL              an upstream cache, asked in order (repeatable;
                              default https://cache.nixos.org)
  --trusted-public-key K      NAME:BASE64; added to cache.nixos.org's key and
                              the config file's keys (repeatable)
  --max-size SIZE             store nothing new while the cache is this big
                              (e.g. 200G); gc --max-size makes room
  --config FILE               JSON config file (flags win over it)
  --log-level LEVEL           fatal|error|warn|info|debug|trace|silent
`;

export interface RunningFill {
  url: string;
  close(): Promise<void>;
}

/**
 * The cache fill publishes into: a directory, or a bucket (docs/lab.md) with
 * a local spool directory for downloads in progress (`$STATE_DIRECTORY`
 * under systemd, else a directory under the temp dir).
 */
async function openStore(config: FillConfig): Promise<FillStore> {
  if (!isS3Url(config.cache)) {
    const target = new LocalTarget(config.cache);
    await target.open(false);
    return new LocalFillStore(target);
  }
  const [{ Bucket }, { S3Target }] = await Promise.all([import('../s3/bucket.js'), import('../push/s3-target.js')]);
  const loc = parseS3Url(config.cache);
  const spool = config.spoolDir ?? join(process.env.STATE_DIRECTORY?.split(':')[0] || tmpdir(), `fill-spool-${loc.bucket}`);
  try {
    return await S3FillStore.open(new S3Target(new Bucket(loc), 32, spool), spool);
  } catch (err) {
    throw new ConfigError(`fill: ${errorMessage(err)}`);
  }
}

/** Starts the fill service for a resolved config; returns once it listens. */
export async function startFill(config: FillConfig, log: Logger): Promise<RunningFill> {
  const target = await openStore(config);
  const stale = await removeDeadFillTemps(target.root);
  if (stale.length) log.info({ event: 'fill-temps-removed', files: stale }, `removed ${stale.length} temporary files of a fill that died`);
  const trusted = TrustedKeys.parse(config.trustedPublicKeys);
  const upstreams = await Promise.all(config.upstream.map((url) => createOrigin({ url, kind: 'upstream', timeouts: config.timeouts, trusted, log })));
  const stats = new FillStats();
  const size = new CacheSize(() => target.bytes());
  await size.start(5 * 60_000);
  const filler = new Filler({ target, upstreams, stats, log, size, maxSize: config.maxSize });
  await filler.open();
  const app = buildFillApp({ store: target, filler, upstreams, stats, log });
  await app.listen({ host: config.listen.host, port: config.listen.port });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.listen.port;
  const host = config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host;
  const url = `http://${host}:${port}`;
  log.info({ event: 'listening', url, cache: target.description, upstream: config.upstream, trustedKeys: trusted.names, maxSize: config.maxSize ?? null }, `fill listening on ${url}`);
  return {
    url,
    async close() {
      const sweep = setInterval(() => app.server.closeIdleConnections(), 100);
      await filler.close();
      await app.close().finally(() => clearInterval(sweep));
      size.stop();
      await Promise.all(upstreams.map((o) => o.close()));
      await target.close();
    },
  };
}

export async function run(argv: string[]): Promise<number> {
  const flags = parseFillFlags(argv);
  if (flags.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const config = resolveFillConfig(flags);
  if (!isS3Url(config.cache)) await requireCacheDir('fill', config.cache);
  const log = createLogger(config.logLevel);
  return runService(log, 'fill', () => startFill(config, log));
}
