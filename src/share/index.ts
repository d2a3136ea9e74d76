import type { Logger } from 'pino';
import type { ShareSnapshot } from '../api.js';
import type { ShareConfig } from '../config.js';
import { ShareAnnouncer } from '../discovery/share-announcer.js';
import { isPrivateLanAddress, parseCidr } from '../protocol/cidr.js';
import type { TrustedKeys } from '../protocol/signing.js';
import { LocalStore, StoreError } from '../store/local-store.js';
import { buildShareApp } from './app.js';
import { ClientLimits } from './limits.js';
import { ShareListener } from './share-listener.js';
import { SharedPaths } from './shared-paths.js';
import { ShareStats } from './share-stats.js';

export { buildShareApp, type ShareDeps } from './app.js';

export interface RunningShare {
  urls(): string[];
  /** The port it listens on (the kernel's choice for port 0). */
  readonly port: number;
  snapshot(): ShareSnapshot;
  close(): Promise<void>;
}

/**
 * Starts this machine's share (docs/sharing.md): checks the store can be
 * read, listens, and announces `_nix-peer._tcp` on mDNS when `announce`.
 * Throws, with nothing left running, when the store cannot be read or the
 * port is taken.
 */
export async function startShare(o: { config: ShareConfig; trusted: TrustedKeys; log: Logger; announce: boolean }): Promise<RunningShare> {
  const log = o.log.child({ component: 'share' });
  const store = new LocalStore(o.config.store);
  try {
    store.check();
  } catch (err) {
    throw new Error(`cannot share the store ${o.config.store}: ${err instanceof StoreError ? err.message : String(err)}`, { cause: err });
  }
  const stats = new ShareStats();
  const allow = o.config.allow.map(parseCidr);
  const deps = { paths: new SharedPaths(store, o.trusted), storeDir: store.storeDir, limits: new ClientLimits(o.config), allow, stats, log };
  const listener = new ShareListener({ listen: o.config.listen, build: () => buildShareApp(deps), allow, stats, log });
  try {
    await listener.start();
  } catch (err) {
    await listener.close();
    store.close();
    throw err;
  }
  const announcer = o.announce ? new ShareAnnouncer(o.trusted.names, log) : undefined;
  const announce = () => announcer?.update(listener.addresses().filter(isPrivateLanAddress), listener.port).catch((err: unknown) => log.warn({ err }, 'announcing the share failed'));
  void announce();
  listener.on('change', () => void announce());
  log.info({ event: 'share-started', urls: listener.urls(), store: o.config.store, keys: o.trusted.names, allow: allow.map((c) => c.text), announce: o.announce }, `sharing signed paths of ${o.config.store} on ${listener.urls().join(', ') || '(no private address yet)'}`);
  return {
    urls: () => listener.urls(),
    get port() {
      return listener.port;
    },
    snapshot: () => ({
      enabled: true,
      urls: listener.urls(),
      store: o.config.store,
      allow: allow.map((c) => c.text),
      keyNames: o.trusted.names,
      announced: announcer !== undefined,
      totals: stats.totals,
      clients: stats.byClient().slice(0, 50),
    }),
    async close() {
      await announcer?.stop();
      await listener.close();
      store.close();
    },
  };
}
