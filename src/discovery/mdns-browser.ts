import { EventEmitter } from 'node:events';
import { networkInterfaces as osNetworkInterfaces, type NetworkInterfaceInfo } from 'node:os';
import multicastDns, { type MulticastDns, type MulticastDnsPacket } from 'multicast-dns';
import type { Logger } from 'pino';
import { errorMessage } from '../errors.js';
import { NIX_CACHE_SERVICE, type ServiceBrowser, type ServiceBrowserEvents, type ServiceInstance } from './browser.js';
import { ServiceRecords, type Changes, type MdnsRecord } from './service-records.js';

/** Browse queries back off from 1 s to this, and start over when the network changes. */
const MAX_BROWSE_INTERVAL_MS = 60_000;
/** A link whose last query could not be sent (link down, no route) is tried again this often. */
const FAILING_RETRY_MS = 2000;
const TICK_MS = 250;

export interface MdnsBrowserOptions {
  log: Logger;
  /** Defaults to `_nix-cache._tcp`. */
  serviceType?: string;
  now?: () => number;
  networkInterfaces?: () => NodeJS.Dict<NetworkInterfaceInfo[]>;
}

/** One interface's mDNS socket: bound to 0.0.0.0:5353, in the group on that interface only, sending through it. */
interface Link {
  name: string;
  address: string;
  mdns: MulticastDns;
  ready: boolean;
  closed: boolean;
  /** The last query could not be sent; it is retried every FAILING_RETRY_MS until one goes out. */
  failing: boolean;
  retryAt: number;
}

/**
 * A ServiceBrowser with one multicast-dns socket per network interface that
 * has an IPv4 address. Each socket joins 224.0.0.251 on its own interface and
 * sends through it, so no multicast or default route is needed, and every
 * error is handled where it arises: a socket that cannot bind is closed and
 * opened again on the next network change; a query that cannot be sent (link
 * down, address gone) is logged and retried; no interface at all means
 * waiting for one. Records are kept by ServiceRecords with their TTLs.
 */
export class MdnsServiceBrowser extends EventEmitter<ServiceBrowserEvents> implements ServiceBrowser {
  private readonly ptrName: string;
  private readonly records: ServiceRecords;
  private readonly links = new Map<string, Link>();
  private readonly closing = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | undefined;
  private lastQueryAt = 0;
  private nextBrowseAt = 0;
  private browseIntervalMs = 1000;
  private waiting = false;
  private readonly now: () => number;
  private readonly networkInterfaces: () => NodeJS.Dict<NetworkInterfaceInfo[]>;
  private readonly log: Logger;

  constructor(options: MdnsBrowserOptions) {
    super();
    this.ptrName = `${options.serviceType ?? NIX_CACHE_SERVICE}.local`.toLowerCase();
    this.records = new ServiceRecords(this.ptrName);
    this.now = options.now ?? Date.now;
    this.networkInterfaces = options.networkInterfaces ?? osNetworkInterfaces;
    this.log = options.log.child({ component: 'mdns' });
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.tick(), TICK_MS);
    this.timer.unref();
    this.bind();
  }

  refresh(reason: string): void {
    if (!this.timer) return;
    this.log.debug({ reason }, 'reopening the mDNS sockets and asking again');
    this.unbind();
    this.bind();
  }

  instances(): ServiceInstance[] {
    return this.records.instances();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.unbind();
    await Promise.all([...this.closing]);
  }

  // ---- sockets ----

  /** One IPv4 address per interface that has one (loopback excluded): where mDNS can be spoken. */
  private currentInterfaces(): Map<string, string> {
    const out = new Map<string, string>();
    let all: NodeJS.Dict<NetworkInterfaceInfo[]>;
    try {
      all = this.networkInterfaces();
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, 'cannot list network interfaces');
      return out;
    }
    for (const [name, infos] of Object.entries(all)) {
      const v4 = (infos ?? []).find((i) => i.family === 'IPv4' && !i.internal);
      if (v4) out.set(name, v4.address);
    }
    return out;
  }

  private bind(): void {
    const wanted = this.currentInterfaces();
    if (wanted.size === 0) {
      if (!this.waiting) this.log.info({ event: 'mdns-waiting' }, 'no network interface with an IPv4 address: mDNS browsing starts when one appears');
      this.waiting = true;
      return;
    }
    this.waiting = false;
    this.log.info({ event: 'mdns-interfaces', interfaces: Object.fromEntries(wanted) }, `browsing for ${this.ptrName} on ${[...wanted.keys()].join(', ')}`);
    for (const [name, address] of wanted) this.open(name, address);
    this.browseIntervalMs = 1000;
    this.nextBrowseAt = this.now() + this.browseIntervalMs;
  }

  private open(name: string, address: string): void {
    let mdns: MulticastDns;
    try {
      mdns = multicastDns({ interface: address, bind: '0.0.0.0', port: 5353, reuseAddr: true, loopback: false, ttl: 255 });
    } catch (err) {
      this.log.warn({ event: 'mdns-socket-error', interface: name, address, err: errorMessage(err) }, `cannot open an mDNS socket on ${name}`);
      return;
    }
    const link: Link = { name, address, mdns, ready: false, closed: false, failing: false, retryAt: 0 };
    this.links.set(name, link);
    // 'error': the socket could not bind (EADDRINUSE, EACCES). It is closed; the next network change tries again.
    mdns.on('error', (err) => {
      if (link.closed) return;
      this.log.warn({ event: 'mdns-socket-error', interface: name, address, err: errorMessage(err) }, `mDNS socket on ${name} failed; closed until the network changes`);
      this.close(link);
    });
    // 'warning': joining the group, choosing the interface, a socket error after binding, a packet that does not decode.
    mdns.on('warning', (err) => this.log.debug({ interface: name, address, err: errorMessage(err) }, 'mDNS socket warning'));
    mdns.on('ready', () => {
      if (link.closed) return;
      link.ready = true;
      this.send(link, 'socket ready');
    });
    mdns.on('response', (packet) => this.receive(packet));
  }

  private close(link: Link): void {
    if (link.closed) return;
    link.closed = true;
    if (this.links.get(link.name) === link) this.links.delete(link.name);
    const done = new Promise<void>((resolve) => {
      try {
        link.mdns.destroy(() => resolve());
      } catch (err) {
        this.log.debug({ interface: link.name, err: errorMessage(err) }, 'closing an mDNS socket failed');
        resolve();
      }
    });
    this.closing.add(done);
    void done.then(() => this.closing.delete(done));
  }

  private unbind(): void {
    for (const link of [...this.links.values()]) this.close(link);
  }

  // ---- queries ----

  private query(why: string): void {
    this.lastQueryAt = this.now();
    for (const link of this.links.values()) if (link.ready) this.send(link, why);
  }

  private send(link: Link, why: string): void {
    link.retryAt = this.now() + FAILING_RETRY_MS;
    try {
      link.mdns.query({ questions: [{ name: this.ptrName, type: 'PTR' }] }, (err) => {
        if (link.closed) return;
        if (err) {
          if (!link.failing) this.log.info({ event: 'mdns-send-failed', interface: link.name, address: link.address, err: errorMessage(err) }, `cannot send mDNS queries on ${link.name}; trying again every ${FAILING_RETRY_MS / 1000} s`);
          link.failing = true;
          return;
        }
        if (link.failing) {
          link.failing = false;
          this.log.info({ event: 'mdns-send-works', interface: link.name }, `mDNS queries go out on ${link.name} again`);
          // The link is back: browse quickly again.
          this.browseIntervalMs = 1000;
          this.nextBrowseAt = Math.min(this.nextBrowseAt, this.now() + 1000);
        }
        this.log.trace({ why, interface: link.name }, 'mDNS query sent');
      });
    } catch (err) {
      link.failing = true;
      this.log.debug({ interface: link.name, err: errorMessage(err) }, 'sending an mDNS query failed');
    }
  }

  private tick(): void {
    const now = this.now();
    // Browse: 1 s, 2 s, 4 s … up to a minute; refresh() starts over.
    if (now >= this.nextBrowseAt) {
      this.query('browse');
      this.browseIntervalMs = Math.min(this.browseIntervalMs * 2, MAX_BROWSE_INTERVAL_MS);
      this.nextBrowseAt = now + this.browseIntervalMs;
    } else {
      for (const link of this.links.values()) if (link.ready && link.failing && now >= link.retryAt) this.send(link, 'retry');
    }
    const refreshEvery = this.records.refreshInterval(now);
    if (refreshEvery !== Infinity && now - this.lastQueryAt >= refreshEvery) this.query('refresh records');
    this.emitChanges(this.records.update(now));
  }

  // ---- responses ----

  private receive(packet: MulticastDnsPacket): void {
    if (packet?.type !== 'response') return; // queries (and their known answers) are not announcements
    const now = this.now();
    let goodbye = false;
    try {
      for (const list of [packet.answers, packet.authorities, packet.additionals]) {
        if (!Array.isArray(list)) continue;
        for (const rec of list) if (this.records.add(rec as MdnsRecord, now)) goodbye = true;
      }
    } catch (err) {
      // ServiceRecords checks every field it reads; this is a second line for a packet shaped beyond imagination.
      this.log.debug({ err: errorMessage(err) }, 'ignoring the rest of an mDNS packet that could not be read');
    }
    // A goodbye leaves its record 1 s to live; ask at once so a cache that is
    // still there (and a spoofed goodbye) is refuted before anything is dropped.
    if (goodbye && now - this.lastQueryAt >= 500) this.query('goodbye received');
    this.emitChanges(this.records.update(now));
  }

  private emitChanges(changes: Changes): void {
    if (changes.down.length > 0) {
      // Browse quickly again: a cache that went away may come back.
      this.browseIntervalMs = 1000;
      this.nextBrowseAt = Math.min(this.nextBrowseAt, this.now() + 1000);
    }
    for (const s of changes.down) this.emit('down', s);
    for (const s of changes.up) this.emit('up', s);
  }
}
