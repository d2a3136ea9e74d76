import { pipeline } from 'node:stream/promises';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { AppError } from '../errors.js';
import type { Origin } from '../origins/origin.js';
import { baseApp } from '../http/base-app.js';
import { writeRawError } from '../http/errors.js';
import { NARINFO_RE } from '../http/paths.js';
import type { Filler } from './filler.js';
import { parseNarName } from './layout.js';
import type { FillStats } from './stats.js';
import type { FillStore } from './store.js';

export interface FillAppDeps {
  store: FillStore;
  filler: Filler;
  upstreams: readonly Origin[];
  stats: FillStats;
  log: Logger;
}

/**
 * The fill service's HTTP app, not listening. nginx sends it only what the
 * cache directory lacks (`try_files $uri @fill`): narinfo misses and NARs not
 * yet stored. Everything else it answers with a clear 4xx.
 */
export function buildFillApp(deps: FillAppDeps): FastifyInstance {
  const { filler, stats } = deps;
  const app = baseApp(deps.log);

  app.get('/nix-cache-info', async (_req, reply) => {
    reply.type('text/x-nix-cache-info');
    return 'StoreDir: /nix/store\n';
  });

  app.get<{ Params: { file: string } }>('/:file', async (req, reply) => {
    const { file } = req.params;
    const m = NARINFO_RE.exec(file);
    if (!m) {
      if (file.endsWith('.narinfo')) throw new AppError('BAD_HASH', `not a store path hash: ${JSON.stringify(file.slice(0, 100))}`);
      throw new AppError('NOT_FOUND', `no such file: ${JSON.stringify(file.slice(0, 100))}`);
    }
    const found = await filler.narinfo(m[1]!);
    if (found.status !== 'found') {
      if (found.status === 'missing') stats.narinfoMissing++;
      else stats.narinfoUnavailable++;
      // A 404 also when upstream is unreachable: Nix and the laptops' proxies move on at once.
      throw new AppError('NOT_IN_ANY_ORIGIN', `no upstream has a trusted narinfo for ${m[1]}`, found.status === 'unavailable' ? { unknown: found.unknown } : undefined);
    }
    stats.narinfoFound++;
    reply.header('x-nix-lan-cache-fill', found.source);
    reply.type('text/x-nix-narinfo');
    return found.text;
  });

  app.get<{ Params: { name: string } }>('/nar/:name', async (req, reply) => {
    const nar = parseNarName(req.params.name);
    if (!nar) throw new AppError('BAD_PATH', `not a NAR file name of this cache: ${JSON.stringify(req.params.name.slice(0, 120))}`);
    // Published between nginx's look and now (or, for a bucket, a hit: fill serves those too): serve the file.
    const stored = await deps.store.file(nar.rel);
    if (stored) {
      reply.type('application/x-nix-nar').header('content-length', stored.size);
      return req.method === 'HEAD' ? reply.send() : reply.send(await stored.stream());
    }
    const bad = filler.badNar(nar.fileHash.slice(7));
    if (bad) throw new AppError('NOT_IN_ANY_ORIGIN', `${nar.rel} failed its check a moment ago (${bad}); get it from another cache`);
    const entry = await filler.entryForNar(nar.fileHash.slice(7));
    if (!entry || entry.info.url !== nar.rel) {
      throw new AppError('NOT_FOUND', `${nar.rel} is not in the cache and no narinfo fill handed out names it (ask for the narinfo first)`);
    }
    if (req.method === 'HEAD') {
      reply.type('application/x-nix-nar');
      if (entry.info.fileSize !== undefined) reply.header('content-length', entry.info.fileSize);
      return reply.send();
    }
    if (req.headers.range) {
      // The bytes exist only once the file is stored; Nix retries a 503.
      void filler.fill(entry.storeHash, entry).catch(() => {});
      throw new AppError('ORIGINS_UNAVAILABLE', `${nar.rel} is being filled; ranges are served once it is stored`);
    }
    reply.hijack();
    const res = reply.raw;
    res.on('error', () => {}); // a client that hangs up mid-NAR is not an error of fill's
    if (filler.download(entry).attach(res)) return;
    // It finished between the check above and now: the file is in place.
    const done = await deps.store.file(nar.rel).catch(() => undefined);
    if (!done) {
      writeRawError(res, new AppError('ORIGINS_UNAVAILABLE', `${nar.rel} cannot be served now (its download failed or is not being stored); try again`));
      return;
    }
    res.writeHead(200, { 'content-type': 'application/x-nix-nar', 'content-length': done.size });
    await pipeline(await done.stream(), res).catch(() => res.destroy());
  });

  app.get('/_/health', async () => ({
    ok: true,
    upstreams: deps.upstreams.map((o) => ({ name: o.name, url: o.baseUrl, state: o.breaker.state, since: new Date(o.breaker.changedAt).toISOString(), reason: o.breaker.lastReason })),
  }));
  app.get('/_/stats', async (_req, reply) => {
    reply.header('cache-control', 'no-store');
    return stats.json();
  });
  app.get('/metrics', async (_req, reply) => {
    reply.header('cache-control', 'no-store');
    reply.type('text/plain; version=0.0.4; charset=utf-8');
    return stats.prometheus();
  });
  return app;
}
