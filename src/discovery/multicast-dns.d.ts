// multicast-dns ships no types; this declares the little of it the browser uses.
declare module 'multicast-dns' {
  import type { EventEmitter } from 'node:events';
  import type { RemoteInfo } from 'node:dgram';

  interface MulticastDnsOptions {
    /** Joins the group on, and sends through, the interface with this IPv4 address. */
    interface?: string;
    /** The address the socket binds to (with `interface`, pass 0.0.0.0 or multicast is never received). */
    bind?: string | false;
    port?: number;
    reuseAddr?: boolean;
    loopback?: boolean;
    ttl?: number;
    multicast?: boolean;
  }
  interface MulticastDnsPacket {
    type?: 'query' | 'response';
    answers?: unknown[];
    authorities?: unknown[];
    additionals?: unknown[];
  }
  interface MulticastDns extends EventEmitter {
    query(query: { questions: Array<{ name: string; type: string }> }, callback: (err: Error | null) => void): void;
    destroy(callback?: () => void): void;
    on(event: 'response', listener: (packet: MulticastDnsPacket, rinfo: RemoteInfo) => void): this;
    on(event: 'ready', listener: () => void): this;
    on(event: 'error' | 'warning', listener: (err: Error) => void): this;
  }
  function multicastDns(options?: MulticastDnsOptions): MulticastDns;
  export default multicastDns;
  export type { MulticastDns, MulticastDnsPacket };
}
