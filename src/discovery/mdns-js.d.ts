// mdns-js ships no types; this declares the little of it the browser uses.
declare module 'mdns-js' {
  import type { EventEmitter } from 'node:events';

  interface MdnsJsRecord {
    name: string;
    type: number;
    class: number;
    ttl: number;
    data?: unknown;
    address?: string;
    port?: number;
    target?: string;
  }
  interface MdnsJsPacket {
    header: { qr: number };
    question: MdnsJsRecord[];
    answer: MdnsJsRecord[];
    authority: MdnsJsRecord[];
    additional: MdnsJsRecord[];
  }
  interface MdnsJsNetworking extends EventEmitter {
    connections: Array<{ socket: unknown; networkInterface: string }>;
  }
  interface MdnsJsBrowser extends EventEmitter {
    networking: MdnsJsNetworking;
    onMessageListener: (...args: unknown[]) => void;
    discover(): void;
    stop(): void;
  }
  interface MdnsJsServiceType {
    toString(): string;
  }
  interface MdnsJsAdvertisement {
    start(): void;
    stop(callback?: () => void): void;
  }
  const mdns: {
    version: string;
    createBrowser(serviceType?: MdnsJsServiceType | string): MdnsJsBrowser;
    createAdvertisement(serviceType: MdnsJsServiceType | string, port: number, options?: Record<string, unknown>): MdnsJsAdvertisement;
    tcp(name: string): MdnsJsServiceType;
  };
  export default mdns;
  export type { MdnsJsBrowser, MdnsJsPacket, MdnsJsRecord };
}
