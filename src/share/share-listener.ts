import { EventEmitter } from 'node:events';
import { networkInterfaces as osNetworkInterfaces, type NetworkInterfaceInfo } from 'node:os';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { NetworkWatch } from '../discovery/network-watch.js';
import { errorMessage } from '../errors.js';
import { inNetworks, isPrivateLanAddress, type Cidr } from '../protocol/cidr.js';
import type { ShareStats } from './share-stats.js';

/** `serve --share-listen`: an address and port, or `lan` for every private address of the machine. */
export interface ShareListen {
  host: string;
  port: number;
}

/** The host of `--share-listen` that means "this machine's private LAN addresses, as they come and go". */
export const LAN_HOST = 'lan';

export interface ShareListenerOptions {
  listen: ShareListen;
  /** A share app (share/app.ts), one per address listened on. */
  build: () => FastifyInstance;
  allow: readonly Cidr[];
  stats: ShareStats;
  log: Logger;
  networkInterfaces?: () => NodeJS.Dict<NetworkInterfaceInfo[]>;
}

const TICK_MS = 1000;

/**
 * Where the share listens (docs/sharing.md). With an explicit address, there
 * only. With `lan` (the default), on each private address the machine has
 * (RFC 1918, IPv4 link-local, IPv6 unique-local; never loopback, never a
 * public address), following interfaces as they come and go: a laptop
 * that joins another network shares there only once it has a private
 * address there. A connection from outside the allowed networks is closed
 * before a byte is read.
 */
export class ShareListener extends EventEmitter<{ change: [] }> {
  private readonly apps = new Map<string, FastifyInstance>();
  private readonly watch: NetworkWatch;
  private readonly networkInterfaces: () => NodeJS.Dict<NetworkInterfaceInfo[]>;
  private timer: NodeJS.Timeout | undefined;
  private boundPort: number;
  private syncing = Promise.resolve();

  constructor(private readonly o: ShareListenerOptions) {
    super();
    this.networkInterfaces = o.networkInterfaces ?? osNetworkInterfaces;
    this.watch = new NetworkWatch(TICK_MS, this.networkInterfaces);
    this.boundPort = o.listen.port;
  }

  get lanMode(): boolean {
    return this.o.listen.host === LAN_HOST;
  }

  /** Listens; throws (naming the address) when the port is taken. */
  async start(): Promise<void> {
    if (!this.lanMode) {
      await this.open(this.o.listen.host);
      return;
    }
    this.watch.start(Date.now());
    const addresses = this.lanAddresses();
    if (addresses.length === 0) this.o.log.info({ event: 'share-waiting' }, 'no private LAN address: the share listens as soon as one appears');
    for (const address of addresses) await this.open(address);
    this.timer = setInterval(() => {
      if (this.watch.check(Date.now())) this.syncing = this.syncing.then(() => this.sync());
    }, TICK_MS);
    this.timer.unref();
  }

  /** The base URLs the share answers on now. */
  urls(): string[] {
    return [...this.apps.keys()].map((a) => `http://${a.includes(':') ? `[${a}]` : a}:${this.boundPort}/`);
  }

  /** The IPv4 addresses it listens on (what mDNS announces). */
  addresses(): string[] {
    return [...this.apps.keys()].filter((a) => !a.includes(':'));
  }

  get port(): number {
    return this.boundPort;
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.syncing;
    await Promise.all([...this.apps.keys()].map((a) => this.shut(a)));
  }

  private lanAddresses(): string[] {
    const out = new Set<string>();
    for (const infos of Object.values(this.networkInterfaces())) {
      for (const i of infos ?? []) if (!i.internal && isPrivateLanAddress(i.address) && !i.address.startsWith('fe80')) out.add(i.address);
    }
    return [...out].sort();
  }

  private async sync(): Promise<void> {
    const wanted = new Set(this.lanAddresses());
    let changed = false;
    for (const a of [...this.apps.keys()]) {
      if (wanted.has(a)) continue;
      await this.shut(a);
      changed = true;
    }
    for (const a of wanted) {
      if (this.apps.has(a)) continue;
      try {
        await this.open(a);
        changed = true;
      } catch (err) {
        this.o.log.warn({ event: 'share-listen-failed', address: a, err: errorMessage(err) }, `the share cannot listen on ${a}; trying again when the network changes`);
      }
    }
    if (changed) this.emit('change');
  }

  private async open(address: string): Promise<void> {
    const app = this.o.build();
    const server = app.server;
    server.on('connection', (socket) => {
      if (inNetworks(socket.remoteAddress ?? '', this.o.allow)) return;
      this.o.stats.refused(socket.remoteAddress ?? '', 'network');
      socket.destroy();
    });
    server.headersTimeout = 10_000;
    server.requestTimeout = 15_000;
    server.keepAliveTimeout = 5_000;
    server.maxConnections = 512;
    try {
      await app.listen({ host: address, port: this.boundPort });
    } catch (err) {
      await app.close().catch(() => {});
      const taken = (err as { code?: unknown }).code === 'EADDRINUSE';
      throw new Error(`the share cannot listen on ${address}:${this.boundPort}: ${errorMessage(err)}${taken ? ' (choose another port with --share-listen)' : ''}`, { cause: err });
    }
    const bound = server.address();
    if (typeof bound === 'object' && bound) this.boundPort = bound.port;
    this.apps.set(address, app);
    this.o.log.info({ event: 'share-listening', url: this.urls().find((u) => u.includes(address)) }, `sharing on ${address}:${this.boundPort}`);
  }

  /** Stops listening on one address; NARs still going to peers are cut (they go on from another origin). */
  private async shut(address: string): Promise<void> {
    const app = this.apps.get(address);
    if (!app) return;
    this.apps.delete(address);
    const closing = app.close();
    app.server.closeAllConnections();
    await closing.catch(() => {});
    this.o.log.info({ event: 'share-stopped', address }, `no longer sharing on ${address}`);
  }
}
