import type { Sha256 } from '../protocol/hash.js';
import type { NarInfoLookup, Origin } from '../origins/origin.js';
import type { OriginSet } from '../origins/origin-set.js';
import type { NarFile } from './nar-source.js';
import type { Quarantine } from './quarantine.js';
import type { SlowMarks } from './slow-marks.js';

/** What the NAR path needs to know of one origin's narinfo. */
export interface NarFacts extends NarFile {
  narHash: Sha256;
  narSize: number;
  fileHash?: Sha256 | undefined;
}

/** The narinfos the server layer holds (the resolver's cache) and a way to ask one origin. */
export interface NarInfoAccess {
  /** The narinfo last served for this store hash and the origin it came from, if still cached. */
  cached(storeHash: string): { origin: Origin; facts: NarFacts } | undefined;
  /** One origin's answer, uncached (and counted like every narinfo request to an origin). */
  ask(origin: Origin, storeHash: string): Promise<NarInfoLookup>;
}

export interface Candidate {
  origin: Origin;
  facts: NarFacts;
}

/** What the search met on the way: for the answer when no origin can serve the NAR. */
export interface SearchTrail {
  /** Some origin could not be asked (circuit open, refused, timeout). */
  unknown: boolean;
  quarantined: number;
}

export interface CandidateDeps {
  origins: OriginSet;
  infos: NarInfoAccess;
  quarantine: Quarantine;
  slow: SlowMarks;
}

/**
 * Every origin that can serve the NAR with this NarHash of this store path,
 * in the order to try them: the origin whose narinfo was served (it answered
 * first just now: when that was an upstream, the Pi lacked the path or was
 * too slow, and asking it again per NAR would cost a round trip or a hang),
 * then LAN caches by priority, then upstreams; origins recently too slow for
 * a NAR go last. Quarantined copies are skipped without asking; the others
 * are asked lazily, only when the ones before them failed. An origin whose
 * circuit is open comes after all of them, and only for the narinfo it
 * served: a Pi that broke off a NAR only it has (the path built at home) is
 * asked again when Nix resumes, rather than Nix being told no origin can.
 */
export async function* candidates(storeHash: string, narHash: Sha256, deps: CandidateDeps, trail: SearchTrail): AsyncGenerator<Candidate> {
  const cached = deps.infos.cached(storeHash);
  const ordered = [...deps.origins.ordered()];
  if (cached && ordered.includes(cached.origin)) ordered.splice(0, 0, ...ordered.splice(ordered.indexOf(cached.origin), 1));
  const order = [...ordered.filter((o) => !deps.slow.has(o)), ...ordered.filter((o) => deps.slow.has(o))];
  const openCircuits: Origin[] = [];
  for (const origin of order) {
    if (deps.quarantine.has(origin.id, storeHash)) {
      trail.quarantined++;
      continue;
    }
    if (origin.breaker.isOpen) {
      trail.unknown = true;
      openCircuits.push(origin);
      continue;
    }
    let facts = cached?.origin === origin ? cached.facts : undefined;
    if (!facts) {
      const found = await deps.infos.ask(origin, storeHash);
      if (found.status === 'unknown') trail.unknown = true;
      if (found.status !== 'present') continue;
      facts = found.info;
    }
    if (facts.narHash !== narHash) continue;
    yield { origin, facts };
  }
  // Nothing else could serve it: the request itself probes the circuit (a success closes it).
  for (const origin of openCircuits) {
    if (cached?.origin === origin && cached.facts.narHash === narHash) yield { origin, facts: { ...cached.facts, evenIfOpen: true } };
  }
}

/** Whether some origin other than `origin` might serve this path now (the slow rule needs somewhere to go). */
export function hasAlternative(origin: Origin, storeHash: string, deps: Pick<CandidateDeps, 'origins' | 'quarantine'>): boolean {
  return deps.origins.ordered().some((o) => o !== origin && !o.breaker.isOpen && !deps.quarantine.has(o.id, storeHash));
}
