import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { NarInfoAccess } from '../nar/candidates.js';
import { streamLegacyNar } from '../nar/legacy.js';
import type { Quarantine } from '../nar/quarantine.js';
import type { SlowRule } from '../nar/rate-watch.js';
import type { SlowMarks } from '../nar/slow-marks.js';
import type { openNar } from '../nar/nar-source.js';
import { serveNar } from '../nar/serve-nar.js';
import type { NarRef } from '../protocol/narurl.js';
import type { OriginSet } from '../origins/origin-set.js';
import type { Stats } from '../stats/recorder.js';
import { writeRawError } from '../http/errors.js';
import type { NarInfoResolver } from './narinfo-resolver.js';

export interface NarServing {
  origins: OriginSet;
  resolver: NarInfoResolver;
  stats: Stats;
  log: Logger;
  quarantine: Quarantine;
  slow: SlowMarks;
  slowRule?: SlowRule;
  /** Opens one origin's NAR: the NAR prefetcher's `open` (a NAR fetched ahead, or over HTTP). */
  open?: typeof openNar;
  lanHeadMs?: number | undefined;
}

/** The resolver's narinfos, as the NAR layer sees them. */
function infosOf(resolver: NarInfoResolver): NarInfoAccess {
  return {
    cached(storeHash) {
      const r = resolver.peek(storeHash);
      return r?.status === 'found' ? { origin: r.origin, facts: r.facts } : undefined;
    },
    ask: (origin, storeHash) => resolver.askOrigin(origin, storeHash),
  };
}

/** Answers a request for a NAR URL the proxy handed out: the current content-named form, or a legacy one. */
export async function streamNar(ref: NarRef, method: 'GET' | 'HEAD', headers: IncomingHttpHeaders, res: ServerResponse, deps: NarServing): Promise<void> {
  const infos = infosOf(deps.resolver);
  const range = typeof headers.range === 'string' ? headers.range : undefined;
  if (ref.kind === 'legacy') {
    await streamLegacyNar(ref, method, headers, res, { origins: deps.origins, infos, stats: deps.stats, log: deps.log, writeError: writeRawError });
    return;
  }
  await serveNar(
    { storeHash: ref.storeHash, narHash: ref.narHash, method, range },
    res,
    { ...deps, infos, writeError: writeRawError },
  );
}
