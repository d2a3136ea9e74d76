import { Bonjour, type Service } from 'bonjour-service';
import type { Logger } from 'pino';
import { errorMessage } from '../errors.js';

/** One DNS-SD service to announce (docs/discovery.md for `_nix-cache._tcp`, docs/sharing.md for `_nix-peer._tcp`). */
export interface Publication {
  /** The instance name (dots become dashes on the wire). */
  name: string;
  /** `nix-cache` or `nix-peer`: the `_TYPE._tcp` part. */
  type: string;
  port: number;
  /** The SRV target, e.g. `pi.local`. */
  host: string;
  txt: Record<string, string>;
  /** Announce this IPv4 address only, through its own interface (default: every interface's addresses). */
  address?: string | undefined;
}

/**
 * Announces one service with bonjour-service until `stop()`, which says
 * goodbye (TTL 0) so browsers drop it at once. bonjour-service, not mdns-js:
 * mdns-js's advertiser splits TXT values at dots (`key=pi.lan-1` arrives as
 * "key=pi" and "lan-1"); see docs/discovery.md. Two of its details are
 * handled here: with an address, multicast-dns must bind 0.0.0.0 (bound to
 * the address it never hears queries), and only that address's A record is
 * kept (bonjour-service would announce every interface's).
 */
export class Publisher {
  private readonly bonjour: Bonjour;
  readonly service: Service;
  /** The last mDNS error (the socket could not bind, …), if any. */
  failed: Error | undefined;

  constructor(p: Publication, log: Logger, onUp?: () => void) {
    // (Bonjour passes its options on to multicast-dns, whose `interface`/`bind` its types don't list.)
    const mdnsOptions = (p.address ? { interface: p.address, bind: '0.0.0.0' } : {}) as ConstructorParameters<typeof Bonjour>[0];
    this.bonjour = new Bonjour(mdnsOptions, (err: Error) => {
      this.failed = err;
      log.error({ event: 'announce-error', err: errorMessage(err) }, `mDNS error: ${errorMessage(err)}`);
    });
    this.service = this.bonjour.publish({ name: p.name, type: p.type, protocol: 'tcp', port: p.port, host: p.host, txt: p.txt, disableIPv6: p.address !== undefined });
    if (p.address) {
      const records = this.service.records.bind(this.service);
      this.service.records = () => records().filter((r) => r.type !== 'A' || r.data === p.address);
    }
    this.service.on('up', () => {
      log.info({ event: 'announcing', name: this.service.fqdn, host: p.host, port: p.port, txt: p.txt, interface: p.address }, `announcing ${this.service.fqdn} on port ${p.port}`);
      onUp?.();
    });
  }

  /** Says goodbye (at most 3 s) and closes the socket. */
  async stop(): Promise<void> {
    await new Promise<void>((resolve) => {
      const force = setTimeout(resolve, 3000);
      force.unref();
      this.bonjour.unpublishAll(() => {
        clearTimeout(force);
        resolve();
      });
    });
    await new Promise<void>((resolve) => this.bonjour.destroy(() => resolve()));
  }
}
