import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { resolveFillConfig } from '../../src/fill/config.js';
import { nixEnv } from '../helpers/nix.js';
import { run, runOk } from '../helpers/proc.js';
import { CACHE_NIXOS_ORG_KEY, PI_KEY, evalExpr, evalFails, evalOk } from './nix-eval.js';

const pi = (fill: string, extra = '') => `{
  services.nix-lan-cache.pi = { enable = true; keyName = "pi.lan-1"; ${extra} fill = ${fill}; };
}`;
const summary = (machine: string) => evalOk(evalExpr({ modules: ['pi'], machine }, 'summary'));

describe('Pi module: services.nix-lan-cache.pi.fill', () => {
  it('is off by default: no fill service, nginx serves only what is there', async () => {
    const s = await summary(pi('{ }'));
    expect(s.systemd.services).not.toHaveProperty('nix-lan-cache-fill');
    const loc = s.services.nginx.virtualHosts['nix-lan-cache'].locations;
    expect(loc).not.toHaveProperty('@fill');
    expect(loc['^~ /nar/'].tryFiles).toBeNull();
  });

  it('runs fill as the cache owner with a config file the CLI accepts, and sends nginx misses to it', async () => {
    const s = await summary(pi(`{ enable = true; maxSize = "200G"; trustedPublicKeys = [ "${PI_KEY}" ]; upstreams = [ "https://cache.nixos.org" "https://nix-community.cachix.org" ]; }`));
    const svc = s.systemd.services['nix-lan-cache-fill'];
    expect(svc.wantedBy).toEqual(['multi-user.target']);
    expect(svc.serviceConfig).toMatchObject({ User: 'nix-cache', Group: 'nix-cache', ReadWritePaths: ['/var/lib/nix-cache'], NoNewPrivileges: true, ProtectSystem: 'strict', Restart: 'always', RestartSec: '500ms' });
    expect(svc.unitConfig).toEqual({ StartLimitIntervalSec: 0 });
    const m = /^\/nix\/store\/[a-z0-9]{32}-nix-lan-cache\/bin\/nix-lan-cache fill --config (\/nix\/store\/[a-z0-9]{32}-nix-lan-cache-fill\.json)$/.exec(svc.serviceConfig.ExecStart);
    expect(m).not.toBeNull();
    const file = m![1]!;
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual({
      cache: '/var/lib/nix-cache',
      listen: '127.0.0.1:37516',
      upstream: ['https://cache.nixos.org', 'https://nix-community.cachix.org'],
      trustedPublicKeys: [PI_KEY],
      logLevel: 'info',
      maxSize: '200G',
    });
    const resolved = resolveFillConfig({ config: file });
    expect(resolved.maxSize).toBe(200 * 1024 ** 3);
    expect(resolved.trustedPublicKeys).toEqual([CACHE_NIXOS_ORG_KEY, PI_KEY]);

    const loc = s.services.nginx.virtualHosts['nix-lan-cache'].locations;
    expect(loc['~ ^/[^/]+\\.narinfo$'].tryFiles).toBe('$uri @fill');
    expect(loc['^~ /nar/'].tryFiles).toBe('$uri @fill');
    expect(loc['@fill'].proxyPass).toBe('http://127.0.0.1:37516');
    expect(loc['@fill'].extraConfig).toContain('proxy_buffering off;');
    expect(loc['@fill'].extraConfig).not.toContain('rewrite');

    // The gc timer runs gc as before, then once more holding the cache under maxSize.
    const gc = s.systemd.services['nix-lan-cache-gc'].serviceConfig.ExecStart;
    expect(gc).toHaveLength(2);
    expect(gc[0]).toMatch(/nix-lan-cache gc --cache \/var\/lib\/nix-cache --keep 3 --keep-days 14$/);
    expect(gc[1]).toMatch(/nix-lan-cache gc --cache \/var\/lib\/nix-cache --keep 3 --keep-days 14 --max-size 200G$/);
  });

  it('announces fill=1 (Avahi service file, or `announce --fill`) only while fill is enabled, so laptops wait for the Pi instead of racing upstream', async () => {
    const on = await summary(pi('{ enable = true; }'));
    expect(on.services.avahi.extraServiceFiles['nix-cache']).toContain('<txt-record>fill=1</txt-record>');
    const off = await summary(pi('{ }'));
    expect(off.services.avahi.extraServiceFiles['nix-cache']).not.toContain('fill=');
    const own = await summary(pi('{ enable = true; }', 'announce.method = "nix-lan-cache";'));
    expect(own.systemd.services['nix-lan-cache-announce'].serviceConfig.ExecStart).toMatch(/ announce --port 8080 --path \/ --key-name pi\.lan-1 --fill$/);
  });

  it('under a URL path, fill gets paths relative to the cache root', async () => {
    const s = await summary(pi('{ enable = true; }', 'path = "/cache/";'));
    const loc = s.services.nginx.virtualHosts['nix-lan-cache'].locations;
    expect(loc['^~ /cache/nar/'].tryFiles).toBe('$uri @fill');
    expect(loc['@fill'].extraConfig).toContain('rewrite ^/cache/(.*)$ /$1 break;');
    expect(s.systemd.services['nix-lan-cache-gc'].serviceConfig.ExecStart).toMatch(/--keep-days 14$/); // no maxSize: one gc run
  });

  it('refuses a size it cannot read', async () => {
    expect(await evalFails(evalExpr({ modules: ['pi'], machine: pi('{ enable = true; maxSize = "lots"; }') }, 'summary'))).toMatch(/maxSize' is not of type/);
  });

  it('the fill unit passes systemd-analyze verify', async () => {
    const dir = (await runOk('nix-build', ['--no-out-link', '-E', evalExpr({ modules: ['pi'], machine: pi('{ enable = true; maxSize = "20G"; }') }, 'unitDir')], { env: nixEnv(), timeoutMs: 120_000 })).trim();
    const files = (await readdir(dir)).sort();
    expect(files).toContain('nix-lan-cache-fill.service');
    const res = await run('systemd-analyze', ['verify', '--man=no', ...files.map((f) => join(dir, f))]);
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
  });
});
