import type { Logger } from 'pino';
import { parseServeFlags, resolveServeConfig, type ServeConfig } from '../config.js';
import { createLogger } from '../log.js';
import { HttpOrigin } from '../origins/http-origin.js';
import { OriginSet } from '../origins/origin-set.js';
import { TrustedKeys } from '../protocol/signing.js';
import { RECOMMENDED_NEGATIVE_TTL } from '../doctor/nix-checks.js';
import { buildApp } from '../server/app.js';
import { NarInfoResolver } from '../server/narinfo-resolver.js';
import { openStats } from '../stats/setup.js';
import { registerStatsRoutes } from '../server/stats-routes.js';

const HELP = `usage: nix-lan-cache serve [options]

Runs the localhost substituter. Point Nix at it as the only substituter.

  --listen HOST:PORT          where to listen (default 127.0.0.1:37515)
  --lan URL                   a static LAN cache, asked first (repeatable)
  --upstream URL              an upstream cache, asked in order (repeatable;
                              default https://cache.nixos.org)
  --trusted-public-key K      NAME:BASE64; added to cache.nixos.org's key and
                              the config file's keys (repeatable)
  --no-mdns                   don't browse for LAN caches with mDNS
  --config FILE               JSON config file (flags win over it)
  --log-level LEVEL           fatal|error|warn|info|debug|trace|silent
  --state-dir DIR             where stats are kept across restarts
  --priority N                Priority in the proxy's nix-cache-info (default 30)
`;

export interface Running {
  url: string;
  close(): Promise<void>;
}

/** Starts the proxy for a resolved config; returns once it listens. */
export async function startProxy(config: ServeConfig, log: Logger): Promise<Running> {
  const trusted = TrustedKeys.parse(config.trustedPublicKeys);
  const origins = new OriginSet();
  config.lan.forEach((url, i) =>
    origins.add(new HttpOrigin({ url, kind: 'lan', priority: 10 + i, timeouts: config.timeouts.lan, trusted, log })),
  );
  for (const url of config.upstream) {
    origins.add(new HttpOrigin({ url, kind: 'upstream', timeouts: config.timeouts.upstream, trusted, log }));
  }
  const { stats, close: closeStats } = openStats(config.stateDir, (name) => origins.ordered().find((o) => o.name === name)?.kind, log);
  stats.attachOrigins(origins);
  const hedgeMs = { lan: config.timeouts.lan.hedgeMs, upstream: config.timeouts.upstream.hedgeMs };
  const { prefetchConcurrency, prefetchDepth, ...cache } = config.cache;
  const resolver = new NarInfoResolver(origins, { ...cache, hedgeMs, prefetch: { concurrency: prefetchConcurrency, depth: prefetchDepth } }, stats, log);
  // mDNS discovery (docs/discovery.md): loaded only when browsing is on.
  const discovery = config.mdns ? (await import('../discovery/index.js')).startDiscovery({ origins, trusted, timeouts: config.timeouts.lan, log }) : undefined;
  const app = buildApp({ config, origins, resolver, stats, log, discovery });
  registerStatsRoutes(app, { stats, config });
  await app.listen({ host: config.listen.host, port: config.listen.port });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.listen.port;
  const host = config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host;
  const url = `http://${host}:${port}`;
  log.info({ event: 'listening', url, lan: config.lan, upstream: config.upstream, mdns: config.mdns, trustedKeys: trusted.names }, `listening on ${url}`);
  return {
    url,
    async close() {
      // Connections that finish a NAR while we close would otherwise sit in keep-alive until they time out.
      const sweep = setInterval(() => app.server.closeIdleConnections(), 100);
      await app.close().finally(() => clearInterval(sweep));
      await discovery?.stop();
      await origins.close();
      await closeStats();
    },
  };
}

export async function run(argv: string[]): Promise<number> {
  const flags = parseServeFlags(argv);
  if (flags.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const config = resolveServeConfig(flags);
  const log = createLogger(config.logLevel);
  // Signals are handled from the start: one that arrives while starting stops right after.
  let signalled: NodeJS.Signals | undefined;
  let onSignal: (signal: NodeJS.Signals) => void = (signal) => (signalled = signal);
  const handler = (signal: NodeJS.Signals) => onSignal(signal);
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
  // A rejected promise nobody awaited is a bug, but not one that should take every build on this machine down with it.
  process.on('unhandledRejection', (err) => log.error({ err, event: 'bug' }, 'unhandled promise rejection; the proxy keeps running'));
  const proxy = await startProxy(config, log);
  process.stdout.write(
    `# nix-lan-cache is listening. To use it, put these lines in nix.conf:\n` +
      `substituters = ${proxy.url}\n` +
      `trusted-public-keys = ${config.trustedPublicKeys.join(' ')}\n` +
      `# forget "not found" after a minute, so a path is found as soon as the Pi is back\n` +
      `narinfo-cache-negative-ttl = ${RECOMMENDED_NEGATIVE_TTL}\n`,
  );

  await new Promise<void>((resolve) => {
    onSignal = (signal) => {
      onSignal = () => process.exit(1); // a second signal ends the process at once
      log.info({ event: 'shutdown', signal }, 'shutting down');
      const force = setTimeout(() => process.exit(1), 10_000);
      force.unref();
      proxy.close().then(resolve, (err: unknown) => {
        log.error({ err }, 'error during shutdown');
        resolve();
      });
    };
    if (signalled) onSignal(signalled);
  });
  process.off('SIGTERM', handler);
  process.off('SIGINT', handler);
  return 0;
}
