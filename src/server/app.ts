import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { ServeConfig } from '../config.js';
import type { OriginSet } from '../origins/origin-set.js';
import type { Stats } from '../stats.js';
import { baseApp } from './base-app.js';
import type { NarInfoResolver } from './narinfo-resolver.js';
import { registerCacheRoutes } from './routes.js';

export interface AppDeps {
  config: Pick<ServeConfig, 'priority'>;
  origins: OriginSet;
  resolver: NarInfoResolver;
  stats: Stats;
  log: Logger;
  /** mDNS discovery, when browsing is on: its snapshot is served at GET /_/discovery. */
  discovery?: { snapshot(): unknown };
}

/** The proxy's HTTP app, not yet listening: tests start it on port 0. */
export function buildApp(deps: AppDeps): FastifyInstance {
  const app = baseApp(deps.log);

  app.get('/_/health', async () => ({
    ok: true,
    origins: deps.origins.ordered().map((o) => ({ name: o.name, kind: o.kind, url: o.baseUrl, state: o.breaker.state, since: new Date(o.breaker.changedAt).toISOString(), reason: o.breaker.lastReason })),
  }));
  app.get('/_/discovery', async () => deps.discovery?.snapshot() ?? { enabled: false });
  registerCacheRoutes(app, deps);
  return app;
}
