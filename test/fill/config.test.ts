import { describe, expect, it } from 'vitest';
import { CACHE_NIXOS_ORG, CACHE_NIXOS_ORG_KEY } from '../../src/config.js';
import { resolveFillConfig } from '../../src/fill/config.js';
import { parseFillFlags } from '../../src/cli/fill-flags.js';
import { makeKey } from '../helpers/fake-upstream.js';

const key = makeKey('pi.lan-1').publicText;
const file = (json: unknown) => () => JSON.stringify(json);

describe('fill config: defaults < config file < flags', () => {
  it('defaults: cache.nixos.org and its key, 127.0.0.1:37516, no size cap', () => {
    const c = resolveFillConfig(parseFillFlags(['--cache', '/srv/nix-cache']));
    expect(c).toMatchObject({ cache: '/srv/nix-cache', listen: { host: '127.0.0.1', port: 37516 }, upstream: [CACHE_NIXOS_ORG], trustedPublicKeys: [CACHE_NIXOS_ORG_KEY], logLevel: 'info' });
    expect(c.maxSize).toBeUndefined();
  });

  it('flags win over the file; keys from both are trusted; sizes read like 200G', () => {
    const c = resolveFillConfig(
      parseFillFlags(['--config', 'f.json', '--upstream', 'http://127.0.0.1:1/', '--max-size', '1.5G', '--trusted-public-key', key]),
      file({ cache: '/srv/c', upstream: ['https://a.example'], maxSize: '10G', listen: '[::1]:9000', timeouts: { connectMs: 100 } }),
    );
    expect(c.upstream).toEqual(['http://127.0.0.1:1/']);
    expect(c.maxSize).toBe(Math.floor(1.5 * 1024 ** 3));
    expect(c.listen).toEqual({ host: '::1', port: 9000 });
    expect(c.trustedPublicKeys).toEqual([CACHE_NIXOS_ORG_KEY, key]);
    expect(c.timeouts.connectMs).toBe(100);
  });

  it('names what is wrong: unknown keys, no cache, bad sizes, bad URLs and keys', () => {
    expect(() => resolveFillConfig(parseFillFlags(['--config', 'f.json']), file({ cache: '/c', upstreams: [] }))).toThrow(/unknown key "upstreams"/);
    expect(() => resolveFillConfig(parseFillFlags([]))).toThrow(/--cache DIR is required/);
    expect(() => resolveFillConfig(parseFillFlags(['--cache', '/c', '--max-size', 'lots']))).toThrow(/--max-size must be a size/);
    expect(() => resolveFillConfig(parseFillFlags(['--cache', '/c', '--upstream', 'ftp://x']))).toThrow(/--upstream "ftp:\/\/x"/);
    expect(() => resolveFillConfig(parseFillFlags(['--cache', '/c', '--trusted-public-key', 'nope']))).toThrow(/trusted public key "nope"/);
    expect(() => parseFillFlags(['--cache', '/c', '--lan', 'x'])).toThrow(/fill: Unknown option '--lan'/);
  });
});
