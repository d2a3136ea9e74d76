import type { ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { AppError } from '../errors.js';
import { writeRawError } from '../http/errors.js';
import { baseApp } from '../http/base-app.js';
import { NARINFO_RE } from '../http/paths.js';
import { planResponse, type ResponsePlan } from '../nar/nar-response.js';
import { inNetworks, type Cidr } from '../protocol/cidr.js';
import { parseNarUrl } from '../protocol/narurl.js';
import { StoreError } from '../store/local-store.js';
import type { ClientLimits } from './limits.js';
import { sendLocalNar } from './local-nar.js';
import type { SharedPath, SharedPaths } from './shared-paths.js';
import type { ShareStats } from './share-stats.js';

export interface ShareDeps {
  paths: Pick<SharedPaths, 'find'>;
  /** Where the files of `/nix/store/X` are (`LocalStore.storeDir`). */
  storeDir: string;
  limits: ClientLimits;
  /** Clients outside these networks are refused (the listener also drops their connections at once). */
  allow: readonly Cidr[];
  stats: ShareStats;
  log: Logger;
}

/** The one answer for a path this machine does not give: absent, built here, unsigned, or signed by keys it does not trust. */
const NOT_SHARED = 'not shared here';

/**
 * The share: what other machines' proxies ask this one for (docs/sharing.md).
 * `nix-cache-info`, `<hash>.narinfo` and `nar/<hash>-<NarHash>.nar` of the
 * paths `SharedPaths` shares; nothing else (no listing, no logs, no stats:
 * those stay on the proxy's own loopback listener). Not listening: the
 * listener (share/share-listener.ts) or a test's `inject` drives it.
 */
export function buildShareApp(deps: ShareDeps): FastifyInstance {
  const log = deps.log.child({ component: 'share' });
  const app = baseApp(log);
  const { stats } = deps;

  // Every request: from an allowed network, within the limits; its slot is given back when its response closes.
  app.addHook('onRequest', (req, reply, done) => {
    const client = req.ip;
    if (!inNetworks(client, deps.allow)) {
      stats.refused(client, 'network');
      return done(new AppError('FORBIDDEN', 'this share does not serve your network'));
    }
    const admitted = deps.limits.admit(client);
    if (!admitted.ok) {
      stats.refused(client, admitted.why === 'rate' ? 'rate' : 'busy');
      void reply.header('retry-after', '1');
      return done(new AppError('TOO_MANY_REQUESTS', admitted.why === 'busy' ? 'the share is busy; try again' : 'too many requests from your address; try again'));
    }
    reply.raw.once('close', admitted.release);
    done();
  });

  app.get('/nix-cache-info', async (_req, reply) => {
    reply.type('text/x-nix-cache-info');
    return 'StoreDir: /nix/store\nWantMassQuery: 0\nPriority: 40\n';
  });

  app.get<{ Params: { file: string } }>('/:file', async (req, reply) => {
    const m = NARINFO_RE.exec(req.params.file);
    if (!m) {
      if (req.params.file.endsWith('.narinfo')) throw new AppError('BAD_HASH', `not a store path hash: ${JSON.stringify(req.params.file.slice(0, 80))}`);
      throw new AppError('NOT_FOUND', NOT_SHARED);
    }
    const shared = await find(deps, m[1]!);
    stats.narinfo(req.ip, shared !== undefined);
    if (!shared) throw new AppError('NOT_FOUND', NOT_SHARED);
    reply.type('text/x-nix-narinfo');
    return shared.text;
  });

  app.get<{ Params: { file: string } }>('/nar/:file', async (req, reply) => {
    const ref = parseNarUrl(req.params.file);
    if (ref?.kind !== 'content') throw new AppError('BAD_PATH', 'not a NAR URL of this share (nar/<hash>-<NarHash>.nar)');
    const shared = await find(deps, ref.storeHash);
    if (!shared || shared.info.narHash !== ref.narHash) throw new AppError('NOT_FOUND', NOT_SHARED);
    const plan = planResponse(typeof req.headers.range === 'string' ? req.headers.range : undefined, shared.info.narSize);
    reply.hijack();
    const res = reply.raw;
    if (plan.status === 416 || req.method === 'HEAD') {
      res.writeHead(plan.status, plan.headers);
      res.end();
      return;
    }
    await streamNar(req.ip, res, shared, plan, deps, log);
  });
  return app;
}

async function find(deps: ShareDeps, storeHash: string): Promise<SharedPath | undefined> {
  try {
    return await deps.paths.find(storeHash);
  } catch (err) {
    if (err instanceof StoreError) throw new AppError('STORE_UNAVAILABLE', 'the store cannot be read right now');
    throw err;
  }
}

/** Streams one shared path's NAR to `client`; counts and logs how it ended. */
async function streamNar(client: string, raw: ServerResponse, shared: SharedPath, plan: Extract<ResponsePlan, { start: number }>, deps: ShareDeps, log: Logger): Promise<void> {
  const abort = new AbortController();
  raw.once('close', () => {
    if (!raw.writableFinished) abort.abort();
  });
  deps.stats.narStarted(client);
  const files = `${deps.storeDir}/${shared.info.path.baseName}`;
  const result = await sendLocalNar(raw, shared.info, files, plan, {
    signal: abort.signal,
    pace: (n) => deps.limits.pace(client, n, abort.signal),
    onBytes: (n) => deps.stats.narBytes(client, n),
  });
  if (result.ok) return;
  const ctx = { storePath: shared.info.storePath, client, reason: result.reason };
  if (result.mismatch) {
    deps.stats.narEnded('mismatched');
    log.error({ ...ctx, event: 'share-nar-mismatch' }, `the files of ${shared.info.storePath} do not match its NarHash; not served`);
  } else if (result.sent) {
    deps.stats.narEnded('aborted');
    log.info(ctx, 'NAR to a peer broke off');
  } else log.warn(ctx, 'cannot read a shared path from the store');
  if (!result.sent && !raw.headersSent && !abort.signal.aborted) writeRawError(raw, new AppError('STORE_UNAVAILABLE', `cannot read ${shared.info.path.baseName} from the store`));
}

