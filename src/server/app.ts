import type { FastifyInstance } from 'fastify';
import type { HealthResponse, MemoryStatus } from '../api.js';
import { baseApp } from '../http/base-app.js';
import type { AppDeps } from './deps.js';
import { registerCacheRoutes } from './routes.js';
import { registerStatsRoutes } from './stats-routes.js';

export type { AppDeps } from './deps.js';

function memory(): MemoryStatus {
  const { rss, heapUsed, heapTotal, external, arrayBuffers } = process.memoryUsage();
  return { rss, heapUsed, heapTotal, external, arrayBuffers };
}

/** The proxy's HTTP app, not yet listening: tests start it on port 0. */
export function buildApp(deps: AppDeps): FastifyInstance {
  const app = baseApp(deps.log);

  const narPrefetch = registerCacheRoutes(app, deps);
  app.get('/_/health', async (): Promise<HealthResponse> => ({
    ok: true,
    origins: deps.origins.ordered().map((o) => ({ name: o.name, kind: o.kind, url: o.baseUrl, state: o.breaker.state, since: new Date(o.breaker.changedAt).toISOString(), reason: o.breaker.lastReason })),
    narPrefetch: narPrefetch(),
    memory: memory(),
  }));
  app.get('/_/discovery', async () => ({ ...((deps.discovery?.snapshot() as object | undefined) ?? { enabled: false }), peers: deps.peerDiscovery?.snapshot() ?? { enabled: false } }));
  app.get('/_/share', async () => deps.share?.snapshot() ?? { enabled: false });
  registerStatsRoutes(app, deps);
  return app;
}
