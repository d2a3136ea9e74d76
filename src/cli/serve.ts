import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Discovery } from '../discovery/discovery.js';
import type { RunningShare } from '../share/index.js';
import { errorMessage } from '../errors.js';
import { MemoryGovernor } from '../memory-governor.js';
import { resolveServeConfig, type ServeConfig } from '../config.js';
import { parseServeFlags } from './serve-flags.js';
import { createLogger } from '../log.js';
import { createOrigin } from '../origins/s3-origin.js';
import { OriginSet } from '../origins/origin-set.js';
import { TrustedKeys } from '../protocol/signing.js';
import { RECOMMENDED_NEGATIVE_TTL } from '../doctor/nix-checks.js';
import { NAR_PREFETCH_LIMITS } from '../nar/nar-prefetch.js';
import { defaultSpoolDir } from '../nar/nar-hold.js';
import { buildApp } from '../server/app.js';
import { NarInfoResolver } from '../server/narinfo-resolver.js';
import { openStats } from '../stats/setup.js';
import { runService } from './service.js';

const HELP = `usage: nix-lan-cache serve [options]

Runs the localhost substituter. Point Nix at it as the only substituter.

  --listen HOST:PORT          where to listen (default 127.0.0.1:37515)
  --lan URL                   a static LAN cache, asked first (repeatable); an
                              S3 bucket is s3://BUCKET?endpoint=URL&region=R
                              (AWS credentials from the environment or
                              ~/.aws; docs/lab.md), here and below
  --lan-fill URL              a static LAN cache that fills itself from upstream
                              (nix-lan-cache fill behind it): waited for, not
                              raced against upstream (repeatable)
  --upstream URL              an upstream cache, asked in order (repeatable;
                              default https://cache.nixos.org)
  --trusted-public-key K      NAME:BASE64; added to cache.nixos.org's key and
                              the config file's keys (repeatable)
  --no-mdns                   don't browse for LAN caches with mDNS
  --config FILE               JSON config file (flags win over it)
  --log-level LEVEL           fatal|error|warn|info|debug|trace|silent
  --state-dir DIR             where stats are kept across restarts
  --priority N                Priority in the proxy's nix-cache-info (default 30)
  --peer URL                  another machine's share, asked after LAN caches
                              and before upstreams (repeatable; mDNS finds
                              shares too)
  --peer-order ORDER          before-upstream (default) or after-upstream
  --share                     share this machine's signed store paths with
                              other machines (docs/sharing.md)
  --share-listen ADDR:PORT    where the share listens (default lan:37517:
                              every private LAN address of this machine)
  --share-store DIR           the store shared, as Nix's --store DIR (default /)
  --share-allow CIDR          networks that may use the share (repeatable;
                              default the private ranges)

SIGTERM, SIGINT and SIGHUP stop it gracefully (counters saved); restart it to
apply a new config.
`;

export interface Running {
  url: string;
  close(): Promise<void>;
}

/** Starts the proxy for a resolved config; returns once it listens. On failure nothing it started is left running. */
export async function startProxy(config: ServeConfig, log: Logger): Promise<Running> {
  const trusted = TrustedKeys.parse(config.trustedPublicKeys);
  const origins = new OriginSet([], config.peering.order);
  // An s3:// URL is a bucket read with signed requests (origins/s3-origin.ts); its credentials are read here, once.
  const made = await Promise.allSettled([
    ...config.lan.map((url, i) => createOrigin({ url, kind: 'lan', priority: 10 + i, timeouts: config.timeouts.lan, trusted, log })),
    ...config.lanFill.map((url, i) => createOrigin({ url, kind: 'lan', priority: 10 + config.lan.length + i, fills: true, timeouts: config.timeouts.lanFill, trusted, log })),
    ...config.peer.map((url, i) => createOrigin({ url, kind: 'peer', priority: 10 + i, timeouts: config.timeouts.peer, trusted, log })),
    ...config.upstream.map((url) => createOrigin({ url, kind: 'upstream', timeouts: config.timeouts.upstream, trusted, log })),
  ]);
  const failed = made.find((m) => m.status === 'rejected');
  for (const m of made) if (m.status === 'fulfilled') origins.add(m.value);
  if (failed) {
    await origins.close();
    throw failed.reason;
  }
  const { stats, close: closeStats } = openStats(config.stateDir, (name) => origins.ordered().find((o) => o.name === name)?.kind, log);
  let app: FastifyInstance | undefined;
  let discovery: Discovery | undefined;
  let peerDiscovery: Discovery | undefined;
  let share: RunningShare | undefined;
  try {
    stats.attachOrigins(origins);
    const hedgeMs = { lan: config.timeouts.lan.hedgeMs, peer: config.timeouts.peer.hedgeMs, upstream: config.timeouts.upstream.hedgeMs };
    const { prefetchConcurrency, prefetchDepth, narPrefetchBytes, narPrefetchConcurrency, spoolDir, spoolBytes, holdMaxSeconds, ...cache } = config.cache;
    const resolver = new NarInfoResolver(origins, { ...cache, hedgeMs, prefetch: { concurrency: prefetchConcurrency, depth: prefetchDepth }, peers: { fanout: config.peering.fanout, missTtlSeconds: config.peering.missTtlSeconds } }, stats, log);
    // mDNS discovery (docs/discovery.md): loaded only when browsing is on, started only once the proxy listens.
    const mdns = config.mdns ? await import('../discovery/index.js') : undefined;
    discovery = mdns?.createDiscovery({ origins, trusted, timeouts: config.timeouts.lan, fillTimeouts: config.timeouts.lanFill, log });
    // Other machines' shares (docs/sharing.md), never this machine's own.
    peerDiscovery = mdns?.createPeerDiscovery({ origins, trusted, timeouts: config.timeouts.peer, log, isSelf: mdns.ownShare(() => share?.port) });
    const narPrefetch = { ...NAR_PREFETCH_LIMITS, budgetBytes: narPrefetchBytes, concurrency: narPrefetchConcurrency };
    const shareView = { snapshot: () => share?.snapshot() ?? { enabled: false } };
    app = buildApp({ config, origins, resolver, stats, log, discovery, peerDiscovery, share: shareView, narPrefetch, narHold: holdMaxSeconds > 0 ? { spoolDir: spoolDir ?? defaultSpoolDir(), spoolBytes, maxHoldMs: holdMaxSeconds * 1000 } : undefined, lanNarHeadMs: config.timeouts.lan.hedgeMs });
    try {
      await app.listen({ host: config.listen.host, port: config.listen.port });
    } catch (err) {
      throw new Error(`cannot listen on ${config.listen.host}:${config.listen.port}: ${errorMessage(err)}${(err as { code?: unknown }).code === 'EADDRINUSE' ? ' (another nix-lan-cache, or something else, uses that port; choose another with --listen)' : ''}`, { cause: err });
    }
    // The share: its own listener; a store it cannot read or a port taken stops the start like the proxy's own port.
    if (config.share.enable) share = await (await import('../share/index.js')).startShare({ config: config.share, trusted, log, announce: config.mdns });
  } catch (err) {
    // The counters are saved and the lock released, so the next start (or the process already running) keeps them.
    await app?.close().catch(() => {});
    await origins.close();
    await closeStats();
    throw err;
  }
  discovery?.start();
  peerDiscovery?.start();
  const governor = new MemoryGovernor();
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.listen.port;
  const host = config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host;
  const url = `http://${host}:${port}`;
  log.info({ event: 'listening', url, lan: config.lan, lanFill: config.lanFill, peer: config.peer, upstream: config.upstream, mdns: config.mdns, share: share?.urls(), trustedKeys: trusted.names }, `listening on ${url}`);
  const listening = app;
  return {
    url,
    async close() {
      // Peers fetching from us go on from another origin at once; the proxy's own clients get their 10 s.
      await share?.close();
      // Connections that finish a NAR while we close would otherwise sit in keep-alive until they time out.
      const sweep = setInterval(() => listening.server.closeIdleConnections(), 100);
      await listening.close().finally(() => clearInterval(sweep));
      governor.stop();
      await discovery?.stop();
      await peerDiscovery?.stop();
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
  return runService(log, 'the proxy', () => startProxy(config, log), (proxy) =>
    process.stdout.write(
      `# nix-lan-cache is listening. To use it, put these lines in nix.conf:\n` +
        `substituters = ${proxy.url}\n` +
        `trusted-public-keys = ${config.trustedPublicKeys.join(' ')}\n` +
        `# forget "not found" after a minute, so a path is found as soon as the Pi is back\n` +
        `narinfo-cache-negative-ttl = ${RECOMMENDED_NEGATIVE_TTL}\n`,
    ),
  );
}
