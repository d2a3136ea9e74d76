import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { resolveServeConfig } from '../../src/config.js';
import { CACHE_NIXOS_ORG_KEY, PI_KEY, evalExpr, evalOk } from './nix-eval.js';

// A laptop that had a cachix cache and a company cache before it imported the client module.
const CACHIX = 'https://nix-community.cachix.org';
const CACHIX_KEY = 'nix-community.cachix.org-1:mB9FSh9qf2dCimDSUo8Zy7bkq5CX+/rkCWyvRCYg3Fs=';
const COMPANY_KEY = 'cache.example.com-1:8WjM3ZFUjFqMhxvUubdXxeiJoWcud0vd70onFHWaeo8=';

const summary = (machine: string) => evalOk(evalExpr({ modules: ['client'], machine }, 'summary'));

/** The JSON config the proxy's unit starts with. */
function proxyConfig(s: any): string {
  return /--config (\S+)$/.exec(s.systemd.services['nix-lan-cache'].serviceConfig.ExecStart)![1]!;
}

describe('client module: the substituters a machine already had become upstreams of the proxy', () => {
  const laptop = (extra = '') => `{ lib, ... }: {
    services.nix-lan-cache = { enable = true; trustedPublicKeys = [ "${PI_KEY}" ]; ${extra} };
    nix.settings.substituters = [ "${CACHIX}" "https://cache.example.com/?priority=10" ];
    nix.settings.trusted-public-keys = [ "${CACHIX_KEY}" "${COMPANY_KEY}" ];
  }`;

  it('laptop with a cachix and a company cache: Nix asks only the proxy, the proxy asks cache.nixos.org, then both caches, and trusts their keys', async () => {
    const s = await summary(laptop());
    expect(s.nix.settings.substituters).toEqual(['http://127.0.0.1:37515']);
    // Nix still trusts every key (it checks signatures itself), each once.
    expect([...s.nix.settings['trusted-public-keys']].sort()).toEqual([CACHE_NIXOS_ORG_KEY, CACHIX_KEY, COMPANY_KEY, PI_KEY].sort());
    // What Nix had, in its order (NixOS appends cache.nixos.org with mkAfter), without store parameters.
    expect(s.nixLanCache.extraUpstreams).toEqual([CACHIX, 'https://cache.example.com', 'https://cache.nixos.org']);
    const file = proxyConfig(s);
    const config = JSON.parse(readFileSync(file, 'utf8'));
    expect(config.upstream).toEqual(['https://cache.nixos.org', CACHIX, 'https://cache.example.com']);
    expect(config.trustedPublicKeys).toEqual([PI_KEY, CACHIX_KEY, COMPANY_KEY]);
    // The real CLI starts with it.
    const resolved = resolveServeConfig({ config: file });
    expect(resolved.upstream).toEqual(['https://cache.nixos.org', CACHIX, 'https://cache.example.com']);
    expect(resolved.trustedPublicKeys).toEqual(expect.arrayContaining([CACHE_NIXOS_ORG_KEY, PI_KEY, CACHIX_KEY, COMPANY_KEY]));
    expect(s.warnings).toEqual([]);
  });

  it('reads the other definitions as NixOS merges them: mkIf false and a losing mkDefault add nothing, the proxy is never its own upstream', async () => {
    const s = await summary(`{ lib, ... }: {
      imports = [
        { nix.settings.substituters = lib.mkIf false [ "https://disabled.example" ]; }
        { nix.settings.substituters = lib.mkDefault [ "https://overridden.example" ]; }
        { nix.settings.substituters = [ "http://127.0.0.1:37515" "https://kept.example/" ]; }
      ];
      services.nix-lan-cache.enable = true;
    }`);
    expect(s.nix.settings.substituters).toEqual(['http://127.0.0.1:37515']);
    expect(JSON.parse(readFileSync(proxyConfig(s), 'utf8')).upstream).toEqual(['https://cache.nixos.org', 'https://kept.example']);
  });

  it('a list forced elsewhere is what Nix had: it becomes the upstreams, and Nix is warned that it still asks it directly', async () => {
    const s = await summary(`{ lib, ... }: {
      services.nix-lan-cache = { enable = true; upstreams = [ ]; };
      nix.settings.substituters = lib.mkForce [ "https://only.example" ];
    }`);
    expect(JSON.parse(readFileSync(proxyConfig(s), 'utf8')).upstream).toEqual(['https://only.example']);
    // Two mkForce definitions merge: Nix gets both, which the module cannot prevent and says so.
    expect([...s.nix.settings.substituters].sort()).toEqual(['http://127.0.0.1:37515', 'https://only.example']);
    expect(s.warnings).toEqual([expect.stringMatching(/nix\.settings\.substituters also lists https:\/\/only\.example.*forced elsewhere/)]);
  });

  it('a substituter the proxy cannot ask (s3://) is named in a warning, not dropped silently', async () => {
    const s = await summary(`{ services.nix-lan-cache.enable = true; nix.settings.substituters = [ "s3://nix-cache?region=eu-west-1" "${CACHIX}" ]; }`);
    expect(JSON.parse(readFileSync(proxyConfig(s), 'utf8')).upstream).toEqual(['https://cache.nixos.org', CACHIX]);
    expect(s.warnings).toEqual([expect.stringMatching(/cannot ask s3:\/\/nix-cache\?region=eu-west-1 \(http and https only\)/)]);
  });

  it('extraUpstreams = [ ] drops them; configureNix = false leaves nix.settings and the upstreams alone', async () => {
    const dropped = await summary(laptop('extraUpstreams = [ ];'));
    expect(JSON.parse(readFileSync(proxyConfig(dropped), 'utf8')).upstream).toEqual(['https://cache.nixos.org']);

    const unmanaged = await summary(laptop('configureNix = false;'));
    expect(unmanaged.nix.settings.substituters).toEqual([CACHIX, 'https://cache.example.com/?priority=10', 'https://cache.nixos.org/']);
    expect(unmanaged.nixLanCache.extraUpstreams).toEqual([]);
    expect(JSON.parse(readFileSync(proxyConfig(unmanaged), 'utf8')).upstream).toEqual(['https://cache.nixos.org']);
  });
});
