import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { readAnnouncement } from '../../src/discovery/announcement.js';
import type { ServiceInstance } from '../../src/discovery/browser.js';
import { ScriptedBrowser } from '../helpers/scripted-browser.js';
import { Discovery } from '../../src/discovery/discovery.js';
import { parseTxt } from '../../src/discovery/service-records.js';
import { OriginSet } from '../../src/origins/origin-set.js';
import { DEFAULT_TIMEOUTS } from '../../src/origins/timeouts.js';
import { TrustedKeys } from '../../src/protocol/signing.js';
import { CACHE_NIXOS_ORG_KEY } from '../../src/config.js';
import { txtRecords } from '../../src/cli/announce.js';

// In process, no network (no multicast): the browser is the test's, and so is the nix-cache-info check.

const PI_KEY = 'pi.lan-1:' + Buffer.alloc(32, 7).toString('base64');
// TEST-NET-1: never contacted.
const pi = (txt: Record<string, string>): ServiceInstance => ({ name: 'pi._nix-cache._tcp.local', host: 'pi.local', addresses: ['192.0.2.10'], port: 8080, txt, ttl: 120 });

let running: Discovery | undefined;
afterEach(async () => {
  await running?.stop();
  running = undefined;
});

async function admitted(txt: Record<string, string>) {
  const browser = new ScriptedBrowser();
  const origins = new OriginSet();
  const discovery = new Discovery({
    browser,
    origins,
    trusted: TrustedKeys.parse([CACHE_NIXOS_ORG_KEY, PI_KEY]),
    timeouts: DEFAULT_TIMEOUTS.lan,
    fillTimeouts: DEFAULT_TIMEOUTS.lanFill,
    log: pino({ level: 'silent' }),
    networkInterfaces: () => ({}),
    checkCacheInfo: async () => undefined,
  });
  running = discovery;
  discovery.start();
  browser.emit('up', pi(txt));
  await new Promise((r) => setImmediate(r));
  return { browser, origins, discovery };
}

describe('a Pi that announces fill=1', () => {
  it('`announce --fill` writes fill=1, and the TXT strings read back as a fill claim', () => {
    const txt = parseTxt(Object.entries(txtRecords({ path: '/', keyName: 'pi.lan-1', priority: undefined, fill: true })).map(([k, v]) => `${k}=${v}`));
    expect(txt.fill).toBe('1');
    expect(readAnnouncement(pi(txt), 50).claim.fill).toBe(true);
    expect(readAnnouncement(pi({ key: 'pi.lan-1', path: '/' }), 50).claim.fill).toBe(false);
    expect(readAnnouncement(pi({ key: 'pi.lan-1', path: '/', fill: 'yes' }), 50).claim.fill).toBe(false); // only fill=1 counts
  });

  it('reaches the DiscoveredOrigin: the admitted origin fills, and the discovery snapshot says so', async () => {
    const { origins, discovery } = await admitted({ key: 'pi.lan-1', path: '/', fill: '1' });
    const [origin] = origins.ordered();
    expect(origin?.kind).toBe('lan');
    expect(origin?.fills).toBe(true);
    expect(discovery.snapshot().caches[0]).toMatchObject({ status: 'admitted', fill: true });
  });

  it('a Pi without fill=1 is a plain LAN cache (hedged as before)', async () => {
    const { origins, discovery } = await admitted({ key: 'pi.lan-1', path: '/' });
    expect(origins.ordered()[0]?.fills).toBe(false);
    expect(discovery.snapshot().caches[0]).toMatchObject({ status: 'admitted', fill: false });
  });

  it('a Pi that starts announcing fill=1 is checked again and admitted as filling', async () => {
    const { browser, origins } = await admitted({ key: 'pi.lan-1', path: '/' });
    expect(origins.ordered()[0]?.fills).toBe(false);
    browser.emit('up', pi({ key: 'pi.lan-1', path: '/', fill: '1' }));
    await new Promise((r) => setImmediate(r));
    expect(origins.ordered()[0]?.fills).toBe(true);
  });
});
