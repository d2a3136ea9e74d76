import type { ShareSnapshot } from '../api.js';
import { errorMessage } from '../errors.js';
import { sigKeyName, TrustedKeys } from '../protocol/signing.js';
import { LocalStore } from '../store/local-store.js';
import type { Finding } from './finding.js';

/** What the store would give away: its valid paths, those with a signature that verifies against a trusted key, by key. */
export interface ShareCount {
  paths: number;
  shared: number;
  byKey: Record<string, number>;
}

/**
 * Counts what a share of `store` gives away with these trusted keys, the way
 * the share decides (share/shared-paths.ts): a path with a signature that
 * verifies against a trusted key. Reads the database directly; for a large
 * store this checks one signature per path (tens of µs each).
 */
export function countShared(storeRoot: string, trustedKeys: readonly string[]): ShareCount {
  const trusted = TrustedKeys.parse(trustedKeys);
  const store = new LocalStore(storeRoot);
  const count: ShareCount = { paths: 0, shared: 0, byKey: {} };
  try {
    store.check();
    for (const info of store.all()) {
      count.paths++;
      for (const sig of info.sigs) {
        if (!trusted.has(sigKeyName(sig))) continue;
        const by = trusted.verify({ ...info, url: '', compression: 'none', extra: [], sigs: [sig] });
        if (!by) continue;
        count.shared++;
        count.byKey[by] = (count.byKey[by] ?? 0) + 1;
        break;
      }
    }
  } finally {
    store.close();
  }
  return count;
}

/**
 * The share, as other machines see it (docs/sharing.md): that it answers on
 * each address it listens on, and what it gives away.
 */
export async function checkShare(share: ShareSnapshot | { enabled: false } | undefined, trustedKeys: readonly string[], timeoutMs = 2000): Promise<Finding[]> {
  if (!share?.enabled) return [{ id: 'share-off', level: 'info', message: "this machine does not share its store with others (serve --share; docs/sharing.md). It still uses other machines' shares." }];
  const out: Finding[] = [];
  if (share.urls.length === 0) {
    out.push({ id: 'share-no-address', level: 'info', message: 'the share is on but listens nowhere yet: this machine has no private LAN address (it starts when one appears)' });
  }
  for (const url of share.urls) {
    try {
      const res = await fetch(new URL('nix-cache-info', url), { signal: AbortSignal.timeout(timeoutMs) });
      const text = await res.text();
      if (res.status !== 200 || !/^StoreDir: \/nix\/store$/m.test(text)) throw new Error(`HTTP ${res.status}`);
      out.push({ id: 'share-answers', level: 'ok', message: `the share answers at ${url}` });
    } catch (err) {
      const cause = (err as { cause?: unknown }).cause;
      out.push({
        id: 'share-unreachable',
        level: 'warn',
        message: `the share does not answer at ${url}: ${errorMessage(err)}${cause ? `: ${errorMessage(cause)}` : ''}`,
        fix: 'check the firewall lets TCP in on that port from the LAN (NixOS: services.nix-lan-cache.share.openFirewall), and that this machine may connect to its own LAN address',
      });
    }
  }
  try {
    const c = countShared(share.store, trustedKeys);
    const keys = Object.entries(c.byKey).map(([k, n]) => `${n} by ${k}`).join(', ');
    out.push({
      id: 'share-paths',
      level: 'info',
      message: `the share gives ${c.shared} of the ${c.paths} paths in ${share.store}${keys ? ` (signed ${keys})` : ''}; the other ${c.paths - c.shared} (built here, unsigned, or signed by keys this proxy does not trust) are never served, nor their existence told`,
    });
  } catch (err) {
    out.push({ id: 'share-store-unreadable', level: 'fail', message: `the share cannot read ${share.store}: ${errorMessage(err)}`, fix: 'check --share-store names a Nix store root (/ for the system store) this user may read' });
  }
  return out;
}
