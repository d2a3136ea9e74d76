import { hostname, networkInterfaces as osNetworkInterfaces, type NetworkInterfaceInfo } from 'node:os';
import type { Logger } from 'pino';
import type { ServiceInstance } from './browser.js';
import { Publisher } from './publisher.js';

/** A TXT string holds at most 255 bytes: `keys=` keeps the names that fit. */
const MAX_TXT = 255;

/** The TXT records of a share's announcement (docs/sharing.md, "The announcement"). */
export function shareTxt(keyNames: readonly string[]): Record<string, string> {
  let keys = '';
  for (const name of keyNames) {
    const next = keys ? `${keys},${name}` : name;
    if (`keys=${next}`.length > MAX_TXT) break;
    keys = next;
  }
  return { path: '/', keys, v: '1' };
}

/**
 * Announces this machine's share as `_nix-peer._tcp` with bonjour-service,
 * one announcement per address it listens on (from that address's
 * interface, with that address only), following the addresses as the share
 * listener reports them. The instance and host names carry the address: two
 * machines named `nixos` on one network (NixOS's default host name) do not
 * collide.
 */
export class ShareAnnouncer {
  private readonly publishers = new Map<string, Publisher>();
  private readonly host = hostname().split('.')[0] || 'nix';

  constructor(
    private readonly keyNames: readonly string[],
    private readonly log: Logger,
  ) {}

  /** Announces on exactly these IPv4 addresses (port `port`), saying goodbye on the others. */
  async update(addresses: readonly string[], port: number): Promise<void> {
    for (const [address, p] of [...this.publishers]) {
      if (addresses.includes(address)) continue;
      this.publishers.delete(address);
      await p.stop();
    }
    for (const address of addresses) {
      if (this.publishers.has(address)) continue;
      const dashed = address.replaceAll('.', '-');
      this.publishers.set(
        address,
        new Publisher({ name: `nix-lan-cache share on ${this.host} (${dashed})`, type: 'nix-peer', port, host: `${this.host}-${dashed}.local`, txt: shareTxt(this.keyNames), address }, this.log),
      );
    }
  }

  async stop(): Promise<void> {
    await this.update([], 0);
  }
}

/**
 * Whether an announcement is this machine's own share (heard back on its
 * own sockets): one of its addresses is an address of this machine and its
 * port is the share's.
 */
export function ownShare(port: () => number | undefined, networkInterfaces: () => NodeJS.Dict<NetworkInterfaceInfo[]> = osNetworkInterfaces): (s: ServiceInstance) => boolean {
  return (s) => {
    const p = port();
    if (p === undefined || s.port !== p) return false;
    const mine = new Set(Object.values(networkInterfaces()).flatMap((infos) => (infos ?? []).map((i) => i.address)));
    return s.addresses.some((a) => mine.has(a));
  };
}
