import { describe, expect, it } from 'vitest';
import { CACHE_NIXOS_ORG_KEY, DEFAULT_PORT, resolveServeConfig } from '../../src/config.js';
import { parseServeFlags } from '../../src/cli/serve-flags.js';
import { ConfigError } from '../../src/errors.js';

const PI_KEY = 'pi.lan-1:' + Buffer.alloc(32, 7).toString('base64');
const files = (map: Record<string, string>) => (p: string) => {
  if (!(p in map)) throw new Error(`ENOENT: ${p}`);
  return map[p]!;
};

describe('serve configuration: defaults < config file < flags', () => {
  it('has sensible embedded defaults', () => {
    const c = resolveServeConfig(parseServeFlags([]));
    expect(c.listen).toEqual({ host: '127.0.0.1', port: DEFAULT_PORT });
    expect(c.upstream).toEqual(['https://cache.nixos.org']);
    expect(c.trustedPublicKeys).toEqual([CACHE_NIXOS_ORG_KEY]);
    expect(c.mdns).toBe(true);
  });
  it('lets the file override defaults and flags override the file; keys add up', () => {
    const read = files({ '/c.json': JSON.stringify({ listen: '127.0.0.1:9', lan: ['http://pi:8080'], trustedPublicKeys: [PI_KEY], mdns: true, timeouts: { lan: { firstByteMs: 300 } } }) });
    const c = resolveServeConfig(parseServeFlags(['--config', '/c.json', '--listen', '[::1]:7000', '--no-mdns']), read);
    expect(c.listen).toEqual({ host: '::1', port: 7000 });
    expect(c.lan).toEqual(['http://pi:8080']);
    expect(c.mdns).toBe(false);
    expect(c.trustedPublicKeys).toEqual([CACHE_NIXOS_ORG_KEY, PI_KEY]);
    expect(c.timeouts.lan.firstByteMs).toBe(300);
    expect(c.timeouts.lan.connectMs).toBeGreaterThan(0);
  });
  it.each([
    [['--bogus'], /bogus/],
    [['--listen', 'nonsense'], /HOST:PORT/],
    [['--listen', '127.0.0.1:70000'], /HOST:PORT/],
    [['--lan', 'ftp://pi/'], /http, https or s3/],
    [['--trusted-public-key', 'pi:xyz'], /trusted public key "pi:xyz"/],
    [['--log-level', 'loud'], /log level/],
    [['extra-arg'], /unexpected argument "extra-arg"/],
  ])('refuses %j with a message that names the problem', (argv, message) => {
    expect(() => resolveServeConfig(parseServeFlags(argv as string[]))).toThrow(message);
    expect(() => resolveServeConfig(parseServeFlags(argv as string[]))).toThrow(ConfigError);
  });
  it('NAR prefetch: on with a 32 MiB budget by default; the file sets its budget (0: off) and concurrency, checked', () => {
    expect(resolveServeConfig(parseServeFlags([])).cache).toMatchObject({ narPrefetchBytes: 32 * 1024 * 1024, narPrefetchConcurrency: 8 });
    const read = files({ '/off.json': '{"cache": {"narPrefetchBytes": 0, "narPrefetchConcurrency": 2}}', '/neg.json': '{"cache": {"narPrefetchBytes": -1}}', '/zero.json': '{"cache": {"narPrefetchConcurrency": 0}}' });
    expect(resolveServeConfig(parseServeFlags(['--config', '/off.json']), read).cache).toMatchObject({ narPrefetchBytes: 0, narPrefetchConcurrency: 2 });
    expect(() => resolveServeConfig(parseServeFlags(['--config', '/neg.json']), read)).toThrow(/cache\.narPrefetchBytes must be an integer from 0/);
    expect(() => resolveServeConfig(parseServeFlags(['--config', '/zero.json']), read)).toThrow(/cache\.narPrefetchConcurrency must be an integer from 1/);
  });
  it('rejects unknown keys in the config file, naming them, also nested ones', () => {
    const read = files({ '/a.json': '{"lan": [], "upstreams": []}', '/b.json': '{"timeouts": {"lan": {"conectMs": 1}}}', '/c.json': '{ nope' });
    expect(() => resolveServeConfig(parseServeFlags(['--config', '/a.json']), read)).toThrow(/unknown key "upstreams"/);
    expect(() => resolveServeConfig(parseServeFlags(['--config', '/b.json']), read)).toThrow(/timeouts\.lan: unknown key "conectMs"/);
    expect(() => resolveServeConfig(parseServeFlags(['--config', '/c.json']), read)).toThrow(/not valid JSON/);
    expect(() => resolveServeConfig(parseServeFlags(['--config', '/missing.json']), read)).toThrow(/cannot read config file/);
  });
  it.each([
    ['{"__proto__": {"mdns": false}}', /unknown key "__proto__"/],
    ['{"constructor": 1}', /unknown key "constructor"/],
    ['{"toString": "x"}', /unknown key "toString"/],
    ['{"hasOwnProperty": true, "valueOf": 2}', /unknown keys "hasOwnProperty", "valueOf"/],
    ['{"timeouts": {"__proto__": {"lan": {}}}}', /timeouts: unknown key "__proto__"/],
    ['{"timeouts": {"lan": {"constructor": 5}}}', /timeouts\.lan: unknown key "constructor"/],
    ['{"cache": {"toString": 1}}', /cache: unknown key "toString"/],
  ])('names and refuses the key of %s that only Object.prototype knows', (text, message) => {
    const read = files({ '/p.json': text });
    expect(() => resolveServeConfig(parseServeFlags(['--config', '/p.json']), read)).toThrow(message);
    expect(() => resolveServeConfig(parseServeFlags(['--config', '/p.json']), read)).toThrow(ConfigError);
    expect(({} as Record<string, unknown>).mdns).toBeUndefined(); // nothing leaked into Object.prototype
  });
  it.each([['--__proto__'], ['--constructor', 'x'], ['--toString']])('refuses the flag %s like any unknown flag', (...argv) => {
    expect(() => resolveServeConfig(parseServeFlags(argv))).toThrow(ConfigError);
  });

  describe('a LAN cache that fills (--lan-fill, lanFill)', () => {
    it('is given by flag or file, with its own timeouts: 5 s to the first byte by default, no hedging', () => {
      const read = files({ '/f.json': JSON.stringify({ lanFill: ['http://pi:8080'], timeouts: { lanFill: { firstByteMs: 9000 } } }) });
      const c = resolveServeConfig(parseServeFlags(['--config', '/f.json']), read);
      expect(c.lanFill).toEqual(['http://pi:8080']);
      expect(c.lan).toEqual([]);
      expect(c.timeouts.lanFill).toMatchObject({ firstByteMs: 9000, connectMs: 400, hedgeMs: 0 });
      expect(resolveServeConfig(parseServeFlags(['--lan-fill', 'http://pi2/'])).lanFill).toEqual(['http://pi2/']);
      expect(resolveServeConfig(parseServeFlags([])).timeouts.lanFill).toMatchObject({ firstByteMs: 5000, hedgeMs: 0 });
    });
    it.each([
      ['{"timeouts": {"lanFill": {"hedgeMs": 100}}}', /timeouts\.lanFill: unknown key "hedgeMs"/],
      ['{"lanFill": "http://pi/"}', /lanFill must be a list of strings/],
      ['{"lanFill": ["ftp://pi/"]}', /--lan-fill "ftp:\/\/pi\/": .*http, https or s3/],
      ['{"lan": ["http://pi:8080"], "lanFill": ["http://pi:8080/"]}', /both as --lan and as --lan-fill/],
    ])('refuses %s with a message that names the problem', (text, message) => {
      const read = files({ '/x.json': text });
      expect(() => resolveServeConfig(parseServeFlags(['--config', '/x.json']), read)).toThrow(message);
    });
  });
});
