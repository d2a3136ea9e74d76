import type { Claim } from './announcement.js';
import type { DiscoveredOrigin } from './discovered-origin.js';
import type { CacheStatus, DiscoveredCache } from './snapshot-types.js';

/** One cache URL that was announced, and what Discovery decided about it. */
export interface Candidate {
  url: string;
  /** The instance whose announcement defines this candidate; others announcing the same URL wait behind it. */
  owner: string;
  claims: Map<string, Claim>;
  status: CacheStatus;
  reason: string;
  retryable: boolean;
  firstSeen: number;
  lastAnnounced: number;
  decidedAt: number | undefined;
  origin: DiscoveredOrigin | undefined;
  /** Bumped whenever the candidate changes, so a check that started before is ignored. */
  generation: number;
  checking: boolean;
  healthChecking: boolean;
  lastHealthCheck: number;
}

/** A candidate as `GET /_/discovery` shows it. */
export function cacheView(c: Candidate, defaultPriority: number): DiscoveredCache {
  const claim = c.claims.get(c.owner);
  const breaker = c.origin?.breaker;
  return {
    url: c.url,
    instance: c.owner,
    keyName: claim?.keyName,
    priority: claim?.priority ?? defaultPriority,
    fill: claim?.fill ?? false,
    status: c.status,
    reason: c.reason,
    firstSeen: iso(c.firstSeen),
    lastAnnounced: iso(c.lastAnnounced),
    decidedAt: c.decidedAt === undefined ? undefined : iso(c.decidedAt),
    verified: c.origin?.verified ?? 0,
    untrusted: c.origin?.untrusted ?? 0,
    ...(breaker ? { breaker: { state: breaker.state, since: iso(breaker.changedAt), reason: breaker.lastReason } } : {}),
  };
}

export function iso(ms: number): string {
  return new Date(ms).toISOString();
}
