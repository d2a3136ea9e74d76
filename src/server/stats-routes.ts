import type { FastifyInstance } from 'fastify';
import type { ServeConfig } from '../config.js';
import type { Stats } from '../stats.js';
import { prometheus } from '../stats/prometheus.js';
import { snapshot, type StatsSnapshot } from '../stats/snapshot.js';
import { STATUS_PAGE_HTML } from './status-page.js';

/** What `/_/stats` adds about the proxy itself (so `doctor` can compare it with nix.conf). */
export interface ProxyInfo {
  lan: string[];
  upstream: string[];
  trustedPublicKeys: string[];
  priority: number;
}

export type StatsResponse = StatsSnapshot & { proxy: ProxyInfo };

export function registerStatsRoutes(app: FastifyInstance, deps: { stats: Stats; config: Pick<ServeConfig, 'lan' | 'upstream' | 'trustedPublicKeys' | 'priority'> }): void {
  const { stats, config } = deps;
  app.get('/_/stats', async (_req, reply) => {
    reply.header('cache-control', 'no-store');
    const body: StatsResponse = {
      ...snapshot(stats),
      proxy: { lan: config.lan, upstream: config.upstream, trustedPublicKeys: config.trustedPublicKeys, priority: config.priority },
    };
    return body;
  });
  app.get('/metrics', async (_req, reply) => {
    reply.header('cache-control', 'no-store');
    reply.type('text/plain; version=0.0.4; charset=utf-8');
    return prometheus(stats);
  });
  app.get('/', async (_req, reply) => {
    reply.header('cache-control', 'no-store');
    reply.header('content-security-policy', "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:");
    reply.type('text/html; charset=utf-8');
    return STATUS_PAGE_HTML;
  });
}
