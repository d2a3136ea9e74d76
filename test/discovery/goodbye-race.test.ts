import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { Discovery } from '../../src/discovery/discovery.js';
import type { ServiceInstance } from '../../src/discovery/browser.js';
import { ScriptedBrowser } from '../helpers/scripted-browser.js';
import { OriginSet } from '../../src/origins/origin-set.js';
import { DEFAULT_TIMEOUTS } from '../../src/origins/timeouts.js';
import { TrustedKeys } from '../../src/protocol/signing.js';
import { CACHE_NIXOS_ORG_KEY } from '../../src/config.js';

// In process, no network: a browser the test drives, and a nix-cache-info check that answers when the test says so.

const PI_KEY = 'pi.lan-1:' + Buffer.alloc(32, 7).toString('base64');
// TEST-NET-1: never contacted (the check is the test's), and never routed if it were.
const pi = (address = '192.0.2.10', name = 'pi._nix-cache._tcp.local'): ServiceInstance => ({
  name,
  host: 'pi.local',
  addresses: [address],
  port: 8080,
  txt: { key: 'pi.lan-1', path: '/' },
  ttl: 120,
});

function setup() {
  const browser = new ScriptedBrowser();
  const origins = new OriginSet();
  const pending: Array<{ url: string; answer: (problem?: string) => void }> = [];
  const discovery = new Discovery({
    browser,
    origins,
    trusted: TrustedKeys.parse([CACHE_NIXOS_ORG_KEY, PI_KEY]),
    timeouts: DEFAULT_TIMEOUTS.lan,
    log: pino({ level: 'silent' }),
    networkInterfaces: () => ({}),
    checkCacheInfo: (url) => new Promise((resolve) => pending.push({ url, answer: resolve })),
  });
  discovery.start();
  return { browser, origins, pending, discovery };
}

const flush = () => new Promise((r) => setImmediate(r));
let running: Discovery | undefined;
afterEach(async () => {
  await running?.stop();
  running = undefined;
});

describe('discovery: a goodbye during the trust check', () => {
  it('a cache that says goodbye while its nix-cache-info check runs is not admitted when the check passes', async () => {
    const { browser, origins, pending, discovery } = setup();
    running = discovery;
    browser.emit('up', pi());
    expect(pending).toHaveLength(1);
    expect(discovery.snapshot().caches[0]).toMatchObject({ url: 'http://192.0.2.10:8080/', status: 'checking' });

    browser.emit('down', pi()); // goodbye, while the check is still out
    expect(discovery.snapshot().caches[0]).toMatchObject({ status: 'gone' });
    pending[0]!.answer(undefined); // the check passes afterwards
    await flush();

    expect(origins.ordered()).toHaveLength(0);
    const snap = discovery.snapshot();
    expect(snap.caches[0]).toMatchObject({ status: 'gone' });
    expect(snap.events.map((e) => e.event)).not.toContain('discovery-admitted');
  });

  it('the same cache announced again afterwards is checked afresh and admitted on that check, not the stale one', async () => {
    const { browser, origins, pending, discovery } = setup();
    running = discovery;
    browser.emit('up', pi());
    browser.emit('down', pi());
    browser.emit('up', pi());
    expect(pending).toHaveLength(2);
    pending[0]!.answer(undefined); // the stale check
    await flush();
    expect(origins.ordered()).toHaveLength(0);
    expect(discovery.snapshot().caches[0]).toMatchObject({ status: 'checking' });
    pending[1]!.answer(undefined);
    await flush();
    expect(origins.ordered().map((o) => o.baseUrl)).toEqual(['http://192.0.2.10:8080/']);
    expect(discovery.snapshot().caches[0]).toMatchObject({ status: 'admitted' });
  });

  it('an announcement that points at the laptop\'s own loopback is refused without being contacted', async () => {
    const { browser, origins, pending, discovery } = setup();
    running = discovery;
    browser.emit('up', pi('127.0.0.1', 'evil._nix-cache._tcp.local'));
    browser.emit('up', pi('0.0.0.0', 'evil2._nix-cache._tcp.local'));
    await flush();
    expect(pending).toHaveLength(0);
    expect(origins.ordered()).toHaveLength(0);
    const refused = discovery.snapshot().events.filter((e) => e.event === 'discovery-refused');
    expect(refused.map((e) => e.reason)).toEqual([expect.stringMatching(/no usable address \(127\.0\.0\.1;/), expect.stringMatching(/no usable address \(0\.0\.0\.0;/)]);
  });
});
