import type { Logger } from 'pino';
import { HttpOrigin } from '../origins/http-origin.js';
import { readAnnouncement, sameClaim } from './announcement.js';
import { withDefaults, type DiscoveryOptions, type DiscoveryTunables } from './discovery-options.js';
import { DiscoveredOrigin } from './discovered-origin.js';
import { NetworkWatch } from './network-watch.js';
import { cacheView, iso, type Candidate } from './candidate.js';
import type { CacheStatus, DiscoveryEvent, DiscoverySnapshot } from './snapshot-types.js';
import type { ServiceInstance } from './browser.js';
import { CACHE_ROLE, claimedKeyNames, type DiscoveryRole } from './roles.js';

export type { CacheStatus, DiscoveredCache, DiscoveryEvent, DiscoverySnapshot } from './snapshot-types.js';
export type { DiscoveryOptions } from './discovery-options.js';

const MAX_CANDIDATES = 64;
const MAX_EVENTS = 100;
const TICK_MS = 1000;
/** Forgotten caches are kept in the snapshot this long. */
const KEEP_GONE_MS = 3600_000;

/**
 * Turns `_nix-cache._tcp` announcements into LAN origins, each only after it
 * proves itself (docs/discovery.md): its announced key name is trusted, its
 * `nix-cache-info` answers for /nix/store, and the narinfos it serves are
 * signed by the key it announced. With the peer role, the same for other
 * machines' shares (`_nix-peer._tcp`, docs/sharing.md; discovery/roles.ts).
 */
export class Discovery {
  private readonly candidates = new Map<string, Candidate>();
  private readonly urlsByInstance = new Map<string, Set<string>>();
  private readonly events: DiscoveryEvent[] = [];
  private readonly log: Logger;
  private timer: NodeJS.Timeout | undefined;
  private readonly network: NetworkWatch;
  private readonly opts: DiscoveryTunables;
  private readonly onUp = (s: ServiceInstance) => this.announced(s);
  private readonly onDown = (s: ServiceInstance) => this.withdrawn(s, 'announcement expired or said goodbye');
  private readonly role: DiscoveryRole;

  constructor(private readonly options: DiscoveryOptions) {
    this.log = options.log.child({ component: 'discovery' });
    this.opts = withDefaults(options);
    this.role = options.role ?? CACHE_ROLE;
    this.network = new NetworkWatch(this.opts.interfacePollMs, this.opts.networkInterfaces);
  }

  start(): void {
    if (this.timer) return;
    this.network.start(Date.now());
    this.options.browser.on('up', this.onUp);
    this.options.browser.on('down', this.onDown);
    this.options.browser.start();
    this.timer = setInterval(() => this.tick(), TICK_MS);
    this.timer.unref();
    this.log.info({ event: 'discovery-started', serviceType: this.role.serviceType, trustedKeyNames: this.options.trusted.names }, `browsing for ${this.role.serviceType}`);
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.options.browser.off('up', this.onUp);
    this.options.browser.off('down', this.onDown);
    await this.options.browser.stop();
    for (const c of this.candidates.values()) {
      c.generation++;
      if (c.origin) await this.options.origins.remove(c.origin.id);
      c.origin = undefined;
    }
  }

  snapshot(): DiscoverySnapshot {
    return {
      enabled: true,
      serviceType: this.role.serviceType,
      trustedKeyNames: this.options.trusted.names,
      caches: [...this.candidates.values()].map((c) => cacheView(c, this.opts.defaultPriority)),
      events: [...this.events],
    };
  }

  // ---- announcements ----

  private announced(s: ServiceInstance): void {
    if (this.role.isSelf?.(s)) return; // our own share, heard back
    const now = Date.now();
    const { claim, urls, refusal } = readAnnouncement(s, this.opts.defaultPriority, this.role.keyTxt);
    if (refusal) this.record('discovery-refused', refusal.url, s.name, refusal.reason);
    const previous = this.urlsByInstance.get(s.name) ?? new Set<string>();
    for (const url of previous) if (!urls.has(url)) this.release(s.name, url, 'its announcement moved to another address');
    this.urlsByInstance.set(s.name, urls);

    for (const url of urls) {
      let c = this.candidates.get(url);
      if (!c) {
        if (this.candidates.size >= MAX_CANDIDATES) this.forgetOldGone();
        if (this.candidates.size >= MAX_CANDIDATES) {
          this.log.warn({ event: 'discovery-full', url, instance: s.name }, 'too many discovered caches; ignoring this one');
          continue;
        }
        c = {
          url,
          owner: s.name,
          claims: new Map(),
          status: 'checking',
          reason: 'announced',
          retryable: false,
          firstSeen: now,
          lastAnnounced: now,
          decidedAt: undefined,
          origin: undefined,
          generation: 0,
          checking: false,
          healthChecking: false,
          lastHealthCheck: now,
        };
        this.candidates.set(url, c);
      }
      const before = c.claims.get(c.owner);
      c.claims.set(s.name, claim);
      c.lastAnnounced = now;
      if (c.status === 'gone') {
        c.owner = s.name;
        this.check(c, 'announced again');
      } else if (c.owner !== s.name) {
        if (!sameClaim(c.claims.get(c.owner), claim)) {
          this.log.info({ event: 'discovery-conflict', url, instance: s.name, owner: c.owner }, `${s.name} announces ${url} with other records than ${c.owner}; ignored while ${c.owner} announces it`);
        }
      } else if (!before || !sameClaim(before, claim)) {
        this.check(c, before ? 'announcement changed' : 'announced');
      } else if (c.status !== 'admitted' && c.retryable && !c.checking && now - (c.decidedAt ?? 0) >= this.opts.recheckMs) {
        this.check(c, 'announced again');
      }
    }
  }

  private withdrawn(s: ServiceInstance, reason: string): void {
    for (const url of this.urlsByInstance.get(s.name) ?? []) this.release(s.name, url, reason);
    this.urlsByInstance.delete(s.name);
  }

  /** `instance` no longer announces `url`. */
  private release(instance: string, url: string, reason: string): void {
    const c = this.candidates.get(url);
    if (!c) return;
    c.claims.delete(instance);
    if (c.owner !== instance) return;
    const next = c.claims.keys().next();
    if (!next.done) {
      // Another instance announces the same URL: it takes over, and must prove itself again.
      c.owner = next.value;
      this.check(c, `${instance} went away; ${next.value} announces it too`);
      return;
    }
    // A check still running for the announcement that went away must not admit it when it answers.
    c.generation++;
    c.checking = false;
    this.unadmit(c);
    this.decide(c, 'gone', reason, false, 'discovery-gone');
  }

  // ---- trust ----

  private check(c: Candidate, why: string): void {
    const generation = ++c.generation;
    this.unadmit(c);
    const claim = c.claims.get(c.owner);
    c.status = 'checking';
    c.reason = why;
    this.record('discovery-announced', c.url, c.owner, `${why}: ${this.role.keyTxt}=${claim?.keyName ?? '(none)'} priority=${claim?.priorityText ?? '(none)'}${claim?.fill ? ' fill=1' : ''}`);
    const names = claimedKeyNames(this.role, claim?.keyName);
    if (!claim || names.length === 0) return this.decide(c, 'refused', `its announcement has no ${this.role.keyTxt}= TXT record`, false);
    const trusted = names.filter((n) => this.options.trusted.has(n));
    if (trusted.length === 0) {
      const which = names.length === 1 ? `its key name ${JSON.stringify(names[0])} is` : `none of its key names (${names.map((n) => JSON.stringify(n)).join(', ')}) is`;
      return this.decide(c, 'refused', `${which} not one of the trusted keys (${this.options.trusted.names.join(', ')})`, false);
    }
    c.checking = true;
    void this.opts.checkCacheInfo(c.url, this.options.timeouts).then((problem) => {
      if (generation !== c.generation) return; // superseded
      c.checking = false;
      if (problem) return this.decide(c, 'refused', problem, true);
      this.admit(c, trusted, claim.priority, claim.fill);
    });
  }

  private admit(c: Candidate, keyNames: string[], priority: number, fills: boolean): void {
    const keyName = keyNames.join(',');
    const http = new HttpOrigin({
      url: c.url,
      kind: this.role.kind,
      name: `${this.role.namePrefix}:${new URL(c.url).host}`,
      priority,
      fills,
      timeouts: fills ? (this.options.fillTimeouts ?? this.options.timeouts) : this.options.timeouts,
      trusted: this.options.trusted,
      requireKeyName: keyNames,
      log: this.options.log,
    });
    const origin = new DiscoveredOrigin(
      http,
      keyName,
      (reason) => {
        if (c.origin !== origin) return;
        this.unadmit(c);
        this.decide(c, 'refused', reason, false);
      },
      this.role.refuseOn,
    );
    c.origin = origin;
    c.lastHealthCheck = Date.now();
    this.options.origins.add(origin);
    const keys = keyNames.length > 1 ? `keys ${keyNames.join(', ')} are trusted; narinfos must be signed by one of them` : `key ${keyName} is trusted; narinfos must be signed by ${keyName}`;
    this.decide(c, 'admitted', `nix-cache-info answered and ${keys}${fills ? '; it fills from upstream (fill=1), so lookups wait for it' : ''}`, false);
  }

  private unadmit(c: Candidate): void {
    const origin = c.origin;
    c.origin = undefined;
    if (origin) void this.options.origins.remove(origin.id);
  }

  private decide(c: Candidate, status: CacheStatus, reason: string, retryable: boolean, event = `discovery-${status}`): void {
    c.status = status;
    c.reason = reason;
    c.retryable = retryable;
    c.decidedAt = Date.now();
    this.record(event, c.url, c.owner, reason);
  }

  private record(event: string, url: string, instance: string, reason: string): void {
    this.events.push({ at: iso(Date.now()), event, url, instance, reason });
    if (this.events.length > MAX_EVENTS) this.events.splice(0, this.events.length - MAX_EVENTS);
    this.log.info({ event, url, instance, reason }, `${event.replace('discovery-', '')}: ${url} (${instance}): ${reason}`);
  }

  // ---- time: network changes, dead caches, rechecks ----

  private tick(): void {
    const now = Date.now();
    const change = this.network.check(now);
    if (change) this.networkChanged(change);
    for (const c of this.candidates.values()) {
      const origin = c.origin;
      if (origin && c.status === 'admitted') {
        if (origin.breaker.isOpen && now - origin.breaker.changedAt > this.opts.dropAfterMs) {
          this.unadmit(c);
          this.decide(c, 'lost', `not answering for ${Math.round((now - origin.breaker.changedAt) / 1000)} s (${origin.breaker.lastReason})`, true);
        } else if (!origin.breaker.isOpen && now - c.lastHealthCheck >= this.opts.healthCheckMs) {
          this.healthCheck(c, origin);
        }
      } else if (c.retryable && !c.checking && c.claims.size > 0 && now - (c.decidedAt ?? 0) >= this.opts.recheckMs) {
        this.check(c, 'checking again');
      }
    }
    this.forgetOldGone();
  }

  /**
   * Checks an admitted cache while nobody uses it, so a Pi that vanished is
   * known to be down (its circuit open) before a request would wait on it.
   */
  private healthCheck(c: Candidate, origin: DiscoveredOrigin): void {
    if (c.healthChecking) return;
    c.healthChecking = true;
    c.lastHealthCheck = Date.now();
    void this.opts.checkCacheInfo(c.url, this.options.timeouts)
      .then((problem) => {
        if (problem && c.origin === origin && !origin.breaker.isOpen) origin.breaker.trip(problem);
      })
      .finally(() => {
        c.healthChecking = false;
      });
  }

  private networkChanged(reason: string): void {
    this.log.info({ event: 'discovery-network-changed', reason }, `${reason}: asking for LAN caches again`);
    this.options.browser.refresh(reason);
    for (const c of this.candidates.values()) {
      if (c.origin && c.status === 'admitted') this.healthCheck(c, c.origin);
      else if (c.retryable && !c.checking && c.claims.size > 0) this.check(c, reason);
    }
  }

  private forgetOldGone(): void {
    const now = Date.now();
    for (const [url, c] of this.candidates) {
      if (c.status === 'gone' && c.claims.size === 0 && now - (c.decidedAt ?? now) > KEEP_GONE_MS) this.candidates.delete(url);
    }
  }
}
