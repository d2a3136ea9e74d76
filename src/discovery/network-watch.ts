import type { NetworkInterfaceInfo } from 'node:os';

/** A tick this late means the machine slept. */
const WAKE_GAP_MS = 10_000;

/**
 * Notices network changes by polling: the non-loopback interfaces and their
 * addresses (Node lists only interfaces that are up and running, so a link
 * going down counts as its addresses going away), and waking from sleep (a
 * tick that comes more than 10 s late). `check` is called from the owner's
 * own timer and returns the reason when something changed.
 */
export class NetworkWatch {
  private lastTick = 0;
  private lastPoll = 0;
  private signature = '';

  constructor(
    private readonly pollMs: number,
    private readonly networkInterfaces: () => NodeJS.Dict<NetworkInterfaceInfo[]>,
  ) {}

  start(now: number): void {
    this.signature = this.current();
    this.lastTick = this.lastPoll = now;
  }

  check(now: number): string | undefined {
    const slept = now - this.lastTick > WAKE_GAP_MS;
    this.lastTick = now;
    if (slept) return 'woke from sleep';
    if (now - this.lastPoll < this.pollMs) return undefined;
    this.lastPoll = now;
    const sig = this.current();
    if (sig === this.signature) return undefined;
    this.signature = sig;
    return 'network interfaces or addresses changed';
  }

  private current(): string {
    const parts: string[] = [];
    for (const [name, infos] of Object.entries(this.networkInterfaces())) {
      for (const i of infos ?? []) if (!i.internal) parts.push(`${name}/${i.address}/${i.netmask}`);
    }
    return parts.sort().join(',');
  }
}
