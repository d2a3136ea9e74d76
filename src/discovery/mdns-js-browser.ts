import { EventEmitter } from 'node:events';
import mdns, { type MdnsJsBrowser, type MdnsJsPacket, type MdnsJsRecord } from 'mdns-js';
import type { Logger } from 'pino';
import { errorMessage } from '../errors.js';
import { NIX_CACHE_SERVICE, type ServiceBrowser, type ServiceBrowserEvents, type ServiceInstance } from './browser.js';

const TYPE_A = 1;
const TYPE_PTR = 12;
const TYPE_TXT = 16;
const TYPE_SRV = 33;

// Bounds, so a noisy or hostile network can't make the cache grow without end.
const MAX_INSTANCES = 64;
const MAX_HOSTS = 256;
const MAX_ADDRESSES_PER_HOST = 8;
const MAX_TXT_STRINGS = 32;

/** Browse queries back off from 1 s to this, and start over when the network changes. */
const MAX_BROWSE_INTERVAL_MS = 60_000;
const TICK_MS = 250;

interface Timed {
  /** When the record was last received (ms). */
  receivedAt: number;
  /** Its TTL in ms. */
  ttlMs: number;
  /** When it expires (ms); a goodbye sets this to 1 s from now (RFC 6762 §10.1). */
  expiresAt: number;
}

interface InstanceRecords {
  name: string;
  ptr?: Timed;
  srv?: Timed & { target: string; port: number };
  txt?: Timed & { strings: string[] };
}

export interface MdnsJsBrowserOptions {
  log: Logger;
  /** Defaults to `_nix-cache._tcp`. */
  serviceType?: string;
  now?: () => number;
}

/**
 * A ServiceBrowser on top of mdns-js. mdns-js owns the sockets (one per IPv4
 * interface, plus 0.0.0.0:5353 in the multicast group) and sends the PTR
 * queries; this class keeps the record cache itself, because mdns-js's own
 * browser reports neither TTLs nor goodbyes, and its decoder throws on some
 * malformed names (a throw there would end the process). So its packet
 * listener is replaced by ours, which never throws.
 */
export class MdnsJsServiceBrowser extends EventEmitter<ServiceBrowserEvents> implements ServiceBrowser {
  private browser: MdnsJsBrowser | undefined;
  private readonly ptrName: string;
  private readonly instancesByName = new Map<string, InstanceRecords>();
  private readonly hosts = new Map<string, Map<string, Timed>>();
  private readonly emitted = new Map<string, { instance: ServiceInstance; key: string }>();
  private timer: NodeJS.Timeout | undefined;
  private lastQueryAt = 0;
  private nextBrowseAt = 0;
  private browseIntervalMs = 1000;
  private readonly now: () => number;
  private readonly log: Logger;
  private readonly onPackets = (packets: unknown, remote: unknown) => {
    try {
      this.handlePackets(packets as MdnsJsPacket[], remote as { address?: string });
    } catch (err) {
      this.log.debug({ err: errorMessage(err) }, 'ignoring an mDNS packet that could not be read');
    }
  };
  private readonly onError = (err: unknown) => this.log.debug({ err: errorMessage(err) }, 'mDNS socket error');

  constructor(options: MdnsJsBrowserOptions) {
    super();
    this.ptrName = `${options.serviceType ?? NIX_CACHE_SERVICE}.local`.toLowerCase();
    this.now = options.now ?? Date.now;
    this.log = options.log.child({ component: 'mdns' });
  }

  start(): void {
    if (this.timer) return;
    this.bind();
    this.timer = setInterval(() => this.tick(), TICK_MS);
    this.timer.unref();
  }

  refresh(reason: string): void {
    if (!this.timer) return;
    this.log.debug({ reason }, 'rebinding mDNS sockets and asking again');
    this.unbind();
    this.bind();
  }

  instances(): ServiceInstance[] {
    return [...this.emitted.values()].map((e) => e.instance);
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.unbind();
  }

  private bind(): void {
    const serviceType = this.ptrName.replace(/\.local$/, '').replace(/^_/, '').replace(/\._tcp$/, '');
    const browser = mdns.createBrowser(mdns.tcp(serviceType));
    // Replace mdns-js's decoder with ours (see the class comment).
    browser.networking.removeListener('packets', browser.onMessageListener);
    browser.networking.on('packets', this.onPackets);
    if (browser.networking.listenerCount('error') === 0) browser.networking.on('error', this.onError);
    browser.on('ready', () => this.query('sockets ready'));
    this.browser = browser;
    this.browseIntervalMs = 1000;
    this.nextBrowseAt = this.now() + this.browseIntervalMs;
  }

  private unbind(): void {
    const browser = this.browser;
    if (!browser) return;
    this.browser = undefined;
    browser.networking.removeListener('packets', this.onPackets);
    try {
      browser.stop(); // the last user of mdns-js's shared networking closes its sockets
    } catch (err) {
      this.log.debug({ err: errorMessage(err) }, 'stopping the mDNS browser failed');
    }
    browser.networking.removeListener('error', this.onError);
  }

  private query(why: string): void {
    if (!this.browser) return;
    this.lastQueryAt = this.now();
    try {
      this.browser.discover();
      this.log.trace({ why }, 'mDNS query sent');
    } catch (err) {
      this.log.debug({ err: errorMessage(err) }, 'sending an mDNS query failed');
    }
  }

  private tick(): void {
    const now = this.now();
    // Browse: 1 s, 2 s, 4 s … up to a minute; refresh() starts over.
    if (now >= this.nextBrowseAt) {
      this.query('browse');
      this.browseIntervalMs = Math.min(this.browseIntervalMs * 2, MAX_BROWSE_INTERVAL_MS);
      this.nextBrowseAt = now + this.browseIntervalMs;
    }
    // Cache maintenance (RFC 6762 §5.2): from 80 % of a record's life, ask again
    // every 5 % of its TTL (at least 1 s apart) until it is refreshed or expires.
    let refreshEvery = Infinity;
    for (const t of this.liveTimings()) {
      if (now >= t.receivedAt + 0.8 * t.ttlMs && now < t.expiresAt) refreshEvery = Math.min(refreshEvery, Math.max(1000, 0.05 * t.ttlMs));
    }
    if (refreshEvery !== Infinity && now - this.lastQueryAt >= refreshEvery) this.query('refresh records');
    this.expire(now);
    this.reconcile();
  }

  /** Timings of the records of instances that are up (the ones worth keeping fresh). */
  private *liveTimings(): Generator<Timed> {
    for (const name of this.emitted.keys()) {
      const rec = this.instancesByName.get(name);
      if (!rec) continue;
      if (rec.ptr) yield rec.ptr;
      if (rec.srv) {
        yield rec.srv;
        for (const a of this.hosts.get(rec.srv.target.toLowerCase())?.values() ?? []) yield a;
      }
      if (rec.txt) yield rec.txt;
    }
  }

  private expire(now: number): void {
    for (const [key, rec] of this.instancesByName) {
      if (rec.ptr && rec.ptr.expiresAt <= now) rec.ptr = undefined;
      if (rec.srv && rec.srv.expiresAt <= now) rec.srv = undefined;
      if (rec.txt && rec.txt.expiresAt <= now) rec.txt = undefined;
      if (!rec.ptr && !rec.srv && !rec.txt) this.instancesByName.delete(key);
    }
    for (const [host, addrs] of this.hosts) {
      for (const [addr, t] of addrs) if (t.expiresAt <= now) addrs.delete(addr);
      if (addrs.size === 0) this.hosts.delete(host);
    }
  }

  private handlePackets(packets: MdnsJsPacket[], remote: { address?: string }): void {
    const now = this.now();
    let goodbye = false;
    for (const packet of Array.isArray(packets) ? packets : [packets]) {
      if (!packet?.header || packet.header.qr !== 1) continue; // queries (and their known answers) are not announcements
      for (const rec of [...(packet.answer ?? []), ...(packet.authority ?? []), ...(packet.additional ?? [])]) {
        if (this.record(rec, now)) goodbye = true;
      }
    }
    this.log.trace({ from: remote?.address }, 'mDNS response');
    // A goodbye leaves its record 1 s to live; ask at once so a cache that is
    // still there (and a spoofed goodbye) is refuted before anything is dropped.
    if (goodbye && now - this.lastQueryAt >= 500) this.query('goodbye received');
    this.reconcile();
  }

  /** Stores one record; true if it was a goodbye for something we track. */
  private record(rec: MdnsJsRecord, now: number): boolean {
    if (!rec || typeof rec.name !== 'string' || typeof rec.ttl !== 'number') return false;
    const name = rec.name.toLowerCase();
    const timing = (previous?: Timed): Timed => {
      if (rec.ttl === 0) {
        // Goodbye: expire in 1 s unless refreshed (only shortens a record we hold).
        const expiresAt = Math.min(previous?.expiresAt ?? now, now + 1000);
        return { receivedAt: previous?.receivedAt ?? now, ttlMs: previous?.ttlMs ?? 1000, expiresAt };
      }
      const ttlMs = Math.min(rec.ttl, 7 * 86400) * 1000;
      return { receivedAt: now, ttlMs, expiresAt: now + ttlMs };
    };
    switch (rec.type) {
      case TYPE_PTR: {
        if (name !== this.ptrName || typeof rec.data !== 'string') return false;
        const instance = rec.data.toLowerCase();
        if (!instance.endsWith(`.${this.ptrName}`)) return false;
        const entry = this.instanceEntry(instance, rec.data, rec.ttl === 0);
        if (!entry) return false;
        entry.ptr = timing(entry.ptr);
        return rec.ttl === 0;
      }
      case TYPE_SRV: {
        if (!name.endsWith(`.${this.ptrName}`) || typeof rec.target !== 'string' || typeof rec.port !== 'number') return false;
        const entry = this.instanceEntry(name, rec.name, rec.ttl === 0);
        if (!entry) return false;
        if (rec.ttl === 0 && entry.srv && entry.srv.target.toLowerCase() !== rec.target.toLowerCase()) return false;
        entry.srv = { ...timing(entry.srv), target: rec.ttl === 0 && entry.srv ? entry.srv.target : rec.target, port: rec.ttl === 0 && entry.srv ? entry.srv.port : rec.port };
        return rec.ttl === 0;
      }
      case TYPE_TXT: {
        if (!name.endsWith(`.${this.ptrName}`)) return false;
        const entry = this.instanceEntry(name, rec.name, rec.ttl === 0);
        if (!entry) return false;
        const strings = Array.isArray(rec.data) ? rec.data.filter((s): s is string => typeof s === 'string').slice(0, MAX_TXT_STRINGS) : [];
        entry.txt = { ...timing(entry.txt), strings: rec.ttl === 0 && entry.txt ? entry.txt.strings : strings };
        return rec.ttl === 0;
      }
      case TYPE_A: {
        if (typeof rec.address !== 'string' || !/^\d{1,3}(\.\d{1,3}){3}$/.test(rec.address)) return false;
        let addrs = this.hosts.get(name);
        if (!addrs) {
          if (rec.ttl === 0 || this.hosts.size >= MAX_HOSTS) return false;
          this.hosts.set(name, (addrs = new Map()));
        }
        const previous = addrs.get(rec.address);
        if (!previous && (rec.ttl === 0 || addrs.size >= MAX_ADDRESSES_PER_HOST)) return false;
        // Cache-flush bits are ignored on purpose: another responder can't wipe an address we know; unused ones expire.
        addrs.set(rec.address, timing(previous));
        return rec.ttl === 0;
      }
      default:
        return false;
    }
  }

  private instanceEntry(key: string, name: string, goodbye: boolean): InstanceRecords | undefined {
    let entry = this.instancesByName.get(key);
    if (!entry) {
      if (goodbye || this.instancesByName.size >= MAX_INSTANCES) return undefined;
      this.instancesByName.set(key, (entry = { name }));
    }
    return entry;
  }

  /** Emits `up` for complete instances that are new or changed, `down` for those gone. */
  private reconcile(): void {
    const now = this.now();
    const current = new Map<string, ServiceInstance>();
    for (const [key, rec] of this.instancesByName) {
      const { ptr, srv, txt } = rec;
      if (!ptr || !srv || !txt || ptr.expiresAt <= now || srv.expiresAt <= now || txt.expiresAt <= now) continue;
      const addrs = [...(this.hosts.get(srv.target.toLowerCase()) ?? new Map<string, Timed>())].filter(([, t]) => t.expiresAt > now);
      if (addrs.length === 0) continue;
      const expiresAt = Math.min(ptr.expiresAt, srv.expiresAt, txt.expiresAt, Math.max(...addrs.map(([, t]) => t.expiresAt)));
      current.set(key, {
        name: rec.name.replace(/\.$/, ''),
        host: srv.target,
        addresses: addrs.map(([a]) => a).sort(),
        port: srv.port,
        txt: parseTxt(txt.strings),
        ttl: Math.max(0, Math.round((expiresAt - now) / 1000)),
      });
    }
    for (const [key, prev] of this.emitted) {
      if (!current.has(key)) {
        this.emitted.delete(key);
        // Start browsing quickly again: a cache that went away may come back.
        this.browseIntervalMs = 1000;
        this.nextBrowseAt = Math.min(this.nextBrowseAt, now + 1000);
        this.emit('down', prev.instance);
      }
    }
    for (const [key, instance] of current) {
      const identity = JSON.stringify([instance.host, instance.addresses, instance.port, instance.txt]);
      const prev = this.emitted.get(key);
      this.emitted.set(key, { instance, key: identity });
      if (prev?.key !== identity) this.emit('up', instance);
    }
  }
}

/** DNS-SD TXT strings to pairs (RFC 6763 §6.4: keys are case-insensitive; the first wins; a key without `=` is a flag). */
export function parseTxt(strings: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const s of strings) {
    const eq = s.indexOf('=');
    const key = (eq < 0 ? s : s.slice(0, eq)).toLowerCase();
    if (!key || Object.hasOwn(out, key)) continue;
    out[key] = eq < 0 ? '' : s.slice(eq + 1);
  }
  return out;
}
