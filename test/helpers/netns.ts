import { processAlive } from '../../src/process-alive.js';
import { run, runOk } from './proc.js';

/**
 * A small LAN made of network namespaces: a "switch" namespace holding a
 * bridge, and one namespace per host joined to it by a veth pair created
 * directly inside the namespaces. Nothing touches the machine's real
 * interfaces. Each host gets 10.231.<subnet>.<n>/24 on `eth0`, loopback up,
 * and a route for 224.0.0.0/4 so mDNS multicast works.
 */
export class NetLab {
  private readonly made: string[] = [];
  private readonly hosts = new Map<string, { ns: string; address: string; port: string }>();

  private constructor(
    /** Unique per test file, so parallel files don't collide. */
    readonly prefix: string,
    readonly subnet: number,
  ) {}

  static async create(prefix: string, subnet: number, hostNames: string[]): Promise<NetLab> {
    if (!/^[a-z0-9-]{1,20}$/.test(prefix)) throw new Error(`bad lab prefix ${prefix}`);
    const lab = new NetLab(prefix, subnet);
    try {
      await lab.build(hostNames);
    } catch (err) {
      await lab.destroy();
      throw err;
    }
    return lab;
  }

  /** Namespace names carry the test process's PID, so two runs of the suite on one machine never touch each other's. */
  private get base(): string {
    return `nlc-${this.prefix}-${process.pid}`;
  }

  private get switchNs(): string {
    return `${this.base}-sw`;
  }

  ns(host: string): string {
    return this.host(host).ns;
  }

  address(host: string): string {
    return this.host(host).address;
  }

  /** Prefix for a command that runs inside the host's namespace. */
  exec(host: string): string[] {
    return ['ip', 'netns', 'exec', this.ns(host)];
  }

  private host(name: string) {
    const h = this.hosts.get(name);
    if (!h) throw new Error(`no host ${name} in lab ${this.prefix}`);
    return h;
  }

  private async build(hostNames: string[]): Promise<void> {
    // Leftovers of an earlier run of this file whose process died before cleaning up (its PID is gone).
    const existing = (await runOk('ip', ['netns', 'list'])).split('\n').map((l) => l.split(' ')[0]!);
    for (const ns of existing) {
      const m = new RegExp(`^nlc-${this.prefix}-(\\d+)-`).exec(ns);
      if (m && !processAlive(Number(m[1]))) await run('ip', ['netns', 'del', ns]);
    }

    const sw = this.switchNs;
    await this.add(sw);
    await ip(['-n', sw, 'link', 'set', 'lo', 'up']);
    await ip(['-n', sw, 'link', 'add', 'br0', 'type', 'bridge', 'mcast_snooping', '0']);
    await ip(['-n', sw, 'link', 'set', 'br0', 'up']);
    let n = 0;
    for (const name of hostNames) {
      n++;
      const ns = `${this.base}-${name}`;
      const port = `p${n}`;
      const address = `10.231.${this.subnet}.${n + 1}`;
      await this.add(ns);
      await ip(['-n', sw, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      await ip(['-n', sw, 'link', 'set', port, 'master', 'br0']);
      await ip(['-n', sw, 'link', 'set', port, 'up']);
      await ip(['-n', ns, 'link', 'set', 'lo', 'up']);
      await ip(['-n', ns, 'addr', 'add', `${address}/24`, 'dev', 'eth0']);
      await ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
      await ip(['-n', ns, 'route', 'add', '224.0.0.0/4', 'dev', 'eth0']);
      this.hosts.set(name, { ns, address, port });
    }
  }

  private async add(ns: string): Promise<void> {
    await ip(['netns', 'add', ns]);
    this.made.push(ns);
  }

  /** The host's own link (`eth0` in its namespace) goes down or up. */
  async link(host: string, state: 'up' | 'down'): Promise<void> {
    await ip(['-n', this.ns(host), 'link', 'set', 'eth0', state]);
    if (state === 'up') {
      // Taking a link down drops its routes; put the multicast route back (ignore "exists").
      await run('ip', ['-n', this.ns(host), 'route', 'add', '224.0.0.0/4', 'dev', 'eth0']);
    }
  }

  /** Deletes every namespace this lab made (their veths go with them). Stop the processes inside first. */
  async destroy(): Promise<void> {
    for (const ns of this.made.reverse()) await run('ip', ['netns', 'del', ns]);
    this.made.length = 0;
  }
}

async function ip(args: string[]): Promise<void> {
  await runOk('ip', args, { timeoutMs: 10_000 });
}
