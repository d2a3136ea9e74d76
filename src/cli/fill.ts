import type { Logger } from 'pino';
import { requireCacheDir } from './args.js';
import { createLogger } from '../log.js';
import { createOrigin } from '../origins/s3-origin.js';
import { TrustedKeys } from '../protocol/signing.js';
import { LocalTarget } from '../push/local-target.js';
import { buildFillApp } from '../fill/app.js';
import { CacheSize, removeDeadFillTemps } from '../fill/cache-size.js';
import { resolveFillConfig, type FillConfig } from '../fill/config.js';
import { parseFillFlags } from './fill-flags.js';
import { Filler } from '../fill/filler.js';
import { FillStats } from '../fill/stats.js';
import { runService } from './service.js';

const HELP = `usage: nix-lan-cache fill --cache DIR [options]

Runs on the Pi behind nginx: what nginx does not find in the static cache
directory (try_files $uri @fill) comes here. A narinfo miss is looked up on
the upstreams; one validly signed by a trusted key is answered at once, and
its NAR is streamed to the client while it is written, checked (FileHash,
NarHash, NarSize) and published in push's layout: NAR first, then narinfo.
See docs/fill.md.

  --cache DIR                 the static binary cache nginx serves (required)
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

/** Starts the fill service for a resolved config; returns once it listens. */
export async function startFill(config: FillConfig, log: Logger): Promise<RunningFill> {
  const target = new LocalTarget(config.cache);
  await target.open(false);
  const stale = await removeDeadFillTemps(target.root);
  if (stale.length) log.info({ event: 'fill-temps-removed', files: stale }, `removed ${stale.length} temporary files of a fill that died`);
  const trusted = TrustedKeys.parse(config.trustedPublicKeys);
  const upstreams = await Promise.all(config.upstream.map((url) => createOrigin({ url, kind: 'upstream', timeouts: config.timeouts, trusted, log })));
  const stats = new FillStats();
  const size = new CacheSize(target.root);
  await size.start(5 * 60_000);
  const filler = new Filler({ target, upstreams, stats, log, size, maxSize: config.maxSize });
  await filler.open();
  const app = buildFillApp({ cacheDir: target.root, filler, upstreams, stats, log });
  await app.listen({ host: config.listen.host, port: config.listen.port });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.listen.port;
  const host = config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host;
  const url = `http://${host}:${port}`;
  log.info({ event: 'listening', url, cache: target.root, upstream: config.upstream, trustedKeys: trusted.names, maxSize: config.maxSize ?? null }, `fill listening on ${url}`);
  return {
    url,
    async close() {
      const sweep = setInterval(() => app.server.closeIdleConnections(), 100);
      await filler.close();
      await app.close().finally(() => clearInterval(sweep));
      size.stop();
      await Promise.all(upstreams.map((o) => o.close()));
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
  await requireCacheDir('fill', config.cache);
  const log = createLogger(config.logLevel);
  return runService(log, 'fill', () => startFill(config, log));
}
