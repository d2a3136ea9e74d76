import type { FastifyInstance, FastifyReply } from 'fastify';
import type { ServeConfig } from '../config.js';
import type { Stats } from '../stats/recorder.js';
import { prometheus } from '../stats/prometheus.js';
import { snapshot } from '../stats/snapshot.js';
import type { StatsResponse } from '../api.js';
import { loadStatusPage } from './status-page/assets.js';


export function registerStatsRoutes(app: FastifyInstance, deps: { stats: Stats; config: Pick<ServeConfig, 'lan' | 'upstream' | 'trustedPublicKeys' | 'priority'> & Partial<Pick<ServeConfig, 'lanFill'>> }): void {
  const { stats, config } = deps;
  app.get('/_/stats', async (_req, reply) => {
    reply.header('cache-control', 'no-store');
    const body: StatsResponse = {
      ...snapshot(stats),
      proxy: { lan: config.lan, lanFill: config.lanFill ?? [], upstream: config.upstream, trustedPublicKeys: config.trustedPublicKeys, priority: config.priority },
    };
    return body;
  });
  app.get('/metrics', async (_req, reply) => {
    reply.header('cache-control', 'no-store');
    reply.type('text/plain; version=0.0.4; charset=utf-8');
    return prometheus(stats);
  });
  const page = loadStatusPage();
  app.get('/', async (_req, reply) => {
    reply.header('cache-control', 'no-store');
    reply.header('content-security-policy', "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:");
    reply.type('text/html; charset=utf-8');
    return page.html;
  });
  const script = (body: string) => async (_req: unknown, reply: FastifyReply) => {
    reply.header('cache-control', 'no-cache');
    reply.type('text/javascript; charset=utf-8');
    return body;
  };
  app.get('/_/assets/status.js', script(page.script));
  app.get('/_/assets/format.js', script(page.format));
}
