import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AppError, errorMessage } from '../errors.js';
import { Holds } from '../nar/nar-hold.js';
import { NAR_PREFETCH_LIMITS, NarPrefetcher } from '../nar/nar-prefetch.js';
import { Quarantine } from '../nar/quarantine.js';
import { SlowMarks } from '../nar/slow-marks.js';
import { parseNarUrl } from '../protocol/narurl.js';
import type { Origin } from '../origins/origin.js';
import type { NarPrefetchStatus } from '../api.js';
import type { AppDeps } from './deps.js';
import { streamNar } from './nar-stream.js';
import { DEBUGINFO_RE, LOG_RE, LS_RE, NARINFO_RE, REALISATION_RE } from '../http/paths.js';

/** Registers the substituter's routes; returns the NAR prefetcher's state, for /_/health. */
export function registerCacheRoutes(app: FastifyInstance, deps: AppDeps): () => NarPrefetchStatus {
  const { resolver, origins } = deps;
  const quarantine = deps.quarantine ?? new Quarantine();
  const slow = new SlowMarks();
  const { stats } = deps;
  const prefetcher = new NarPrefetcher(
    deps.narPrefetch ?? { ...NAR_PREFETCH_LIMITS, budgetBytes: 0, concurrency: 0 },
    {
      started: () => stats.narPrefetch('started'),
      used: () => stats.narPrefetch('used'),
      skipped: () => stats.narPrefetch('skipped'),
      wasted: (bytes) => stats.narPrefetchWasted(bytes),
    },
    (origin, storeHash) => !origin.breaker.isOpen && !quarantine.has(origin.id, storeHash) && !slow.has(origin),
  );
  // A LAN cache that proved itself again after being left for a slow NAR: answers found elsewhere meanwhile are forgotten.
  slow.on('back', (origin) => resolver.originBack(origin));
  app.addHook('onClose', async () => {
    slow.close();
    prefetcher.clear();
  });
  let spoolWarned = false;
  const holds = new Holds(prefetcher.budget, {
    spoolDir: deps.narHold?.spoolDir,
    spoolBytes: deps.narHold?.spoolBytes ?? 0,
    onSpoolError: (err) => {
      if (spoolWarned) return;
      spoolWarned = true; // once per run: the NARs that do not fit in memory are then streamed as they come
      deps.log.warn({ event: 'spool-unavailable', dir: deps.narHold?.spoolDir, err: errorMessage(err) }, 'cannot spool a NAR to hold it back until verified; NARs too large for memory are streamed as they come');
    },
  });
  const nar = { ...deps, quarantine, slow, ...(deps.narHold ? { holds } : {}), maxHoldMs: deps.narHold?.maxHoldMs, open: prefetcher.open, lanHeadMs: deps.lanNarHeadMs };

  app.get('/nix-cache-info', async (_req, reply) => {
    reply.type('text/x-nix-cache-info');
    return `StoreDir: /nix/store\nWantMassQuery: 1\nPriority: ${deps.config.priority}\n`;
  });

  // `<hash>.narinfo` and `<hash>.ls` share the root level.
  app.get<{ Params: { file: string } }>('/:file', async (req, reply) => {
    const { file } = req.params;
    const narinfo = NARINFO_RE.exec(file);
    if (narinfo) {
      const found = await resolver.resolve(narinfo[1]!);
      if (found.status !== 'found') {
        // 404 also when origins were unreachable: Nix then moves on or builds instead of failing.
        throw new AppError('NOT_IN_ANY_ORIGIN', `no origin has ${narinfo[1]}.narinfo`, found.status === 'unavailable' ? { unknown: found.unknown } : undefined);
      }
      // Nix asked because it lacks the path: its NAR comes next.
      if (req.method === 'GET') prefetcher.offer(found.origin, narinfo[1]!, found.facts);
      reply.header('x-nix-lan-cache-origin', found.origin.name);
      reply.type('text/x-nix-narinfo');
      return found.text;
    }
    if (LS_RE.test(file)) return passThrough(origins.ordered(), file, req, reply);
    if (/\.(narinfo|ls)$/.test(file)) throw new AppError('BAD_HASH', `not a store path hash: ${JSON.stringify(file)}`);
    throw new AppError('NOT_FOUND', `no such file: ${JSON.stringify(file)}`);
  });

  app.get<{ Params: { '*': string } }>('/nar/*', async (req, reply) => {
    const ref = parseNarUrl(req.params['*']);
    if (!ref) throw new AppError('BAD_PATH', 'not a NAR URL handed out by this proxy');
    reply.hijack();
    await streamNar(ref, req.method === 'HEAD' ? 'HEAD' : 'GET', req.headers, reply.raw, nar);
  });

  const passThroughRoute = (prefix: string, re: RegExp) =>
    app.get<{ Params: { name: string } }>(`/${prefix}/:name`, async (req, reply) => {
      if (!re.test(req.params.name)) throw new AppError('BAD_PATH', `not a valid ${prefix} name: ${JSON.stringify(req.params.name)}`);
      return passThrough(origins.ordered(), `${prefix}/${req.params.name}`, req, reply);
    });
  passThroughRoute('log', LOG_RE);
  passThroughRoute('realisations', REALISATION_RE);
  passThroughRoute('debuginfo', DEBUGINFO_RE);
  return () => prefetcher.pending;
}

/** Files nobody signs (listings, logs, realisations, debug info): the first origin that has one serves it. */
async function passThrough(origins: readonly Origin[], path: string, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  let unknown = false;
  for (const origin of origins) {
    const res = await origin.fetchFile(path, { method: req.method === 'HEAD' ? 'HEAD' : 'GET' });
    if (res.status === 'present') {
      reply.header('x-nix-lan-cache-origin', origin.name);
      const type = res.headers['content-type'];
      if (typeof type === 'string') reply.type(type);
      const length = res.headers['content-length'];
      if (typeof length === 'string') reply.header('content-length', length);
      return reply.send(res.body);
    }
    if (res.status === 'unknown') unknown = true;
  }
  throw new AppError(unknown ? 'ORIGINS_UNAVAILABLE' : 'NOT_IN_ANY_ORIGIN', `no origin has ${path}`);
}
