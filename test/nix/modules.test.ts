import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseConfigFile, resolveServeConfig } from '../../src/config.js';
import { CACHE_NIXOS_ORG_KEY, PI_KEY, evalExpr, evalFails, evalOk } from './nix-eval.js';

const summary = (modules: string[], machine: string, host?: 'nixos' | 'home-manager') => evalOk(evalExpr({ modules, machine, host }, 'summary'));
const failure = (modules: string[], machine: string, host?: 'nixos' | 'home-manager') => evalFails(evalExpr({ modules, machine, host }, 'summary'));

/** `${pkg}/bin/nix-lan-cache serve --config /nix/store/…-nix-lan-cache.json` → the config file's path. */
function configFileOf(execStart: string): string {
  const m = /^\/nix\/store\/[a-z0-9]{32}-nix-lan-cache\/bin\/nix-lan-cache serve --config (\/nix\/store\/[a-z0-9]{32}-nix-lan-cache\.json)$/.exec(execStart);
  if (!m) throw new Error(`unexpected ExecStart: ${execStart}`);
  return m[1]!;
}

describe('client module (services.nix-lan-cache)', () => {
  const machine = `{
    services.nix-lan-cache = {
      enable = true;
      trustedPublicKeys = [ "${PI_KEY}" ];
      lan = [ "http://pi.lan:8080/" ];
      settings.timeouts.lan.connectMs = 300;
      settings.cache.narPrefetchBytes = 16777216;
    };
    # Something else on the machine adds a substituter: the proxy stays the only one, it asks that cache.
    nix.settings.substituters = [ "https://other.example" ];
  }`;

  it('runs the proxy as a hardened DynamicUser service with a config file the CLI accepts', async () => {
    const s = await summary(['client'], machine);
    const svc = s.systemd.services['nix-lan-cache'];
    expect(svc.wantedBy).toEqual(['multi-user.target']);
    const sc = svc.serviceConfig;
    expect(sc).toMatchObject({
      DynamicUser: true,
      StateDirectory: 'nix-lan-cache',
      CacheDirectory: 'nix-lan-cache',
      NoNewPrivileges: true,
      ProtectSystem: 'strict',
      ProtectHome: true,
      PrivateTmp: true,
      CapabilityBoundingSet: '',
      SystemCallFilter: ['@system-service'],
      Restart: 'always',
      // Back within a second if it ever dies (issue 26).
      RestartSec: '500ms',
    });
    // Nix has no other substituter: no start-rate limit either.
    expect(svc.unitConfig).toEqual({ StartLimitIntervalSec: 0 });
    expect(sc.RestrictAddressFamilies).toEqual(['AF_INET', 'AF_INET6', 'AF_UNIX', 'AF_NETLINK']);
    expect(sc).not.toHaveProperty('MemoryDenyWriteExecute');

    const file = configFileOf(sc.ExecStart);
    expect(svc.restartTriggers).toEqual([file]);
    const text = readFileSync(file, 'utf8');
    expect(JSON.parse(text)).toEqual({
      listen: '127.0.0.1:37515',
      lan: ['http://pi.lan:8080/'],
      upstream: ['https://cache.nixos.org', 'https://other.example'],
      trustedPublicKeys: [PI_KEY],
      mdns: true,
      logLevel: 'info',
      stateDir: '/var/lib/nix-lan-cache',
      timeouts: { lan: { connectMs: 300 } },
      cache: { narPrefetchBytes: 16777216 },
    });
    // The real CLI's config reader accepts it (it rejects unknown keys).
    const resolved = resolveServeConfig({ config: file });
    expect(resolved.lan).toEqual(['http://pi.lan:8080/']);
    expect(resolved.timeouts.lan.connectMs).toBe(300);
    expect(resolved.cache).toMatchObject({ narPrefetchBytes: 16777216, narPrefetchConcurrency: 8 });
    expect(resolved.trustedPublicKeys).toContain(PI_KEY);
  });

  it('lanFill: a Pi that fills, with its own timeouts (no hedgeMs), in a config file the CLI accepts', async () => {
    const s = await summary(['client'], `{
      services.nix-lan-cache = {
        enable = true;
        trustedPublicKeys = [ "${PI_KEY}" ];
        lanFill = [ "http://pi.lan:8080/" ];
        settings.timeouts.lanFill.firstByteMs = 8000;
      };
    }`);
    const file = configFileOf(s.systemd.services['nix-lan-cache'].serviceConfig.ExecStart);
    const json = JSON.parse(readFileSync(file, 'utf8'));
    expect(json).toMatchObject({ lan: [], lanFill: ['http://pi.lan:8080/'], timeouts: { lanFill: { firstByteMs: 8000 } } });
    const resolved = resolveServeConfig({ config: file });
    expect(resolved.lanFill).toEqual(['http://pi.lan:8080/']);
    expect(resolved.timeouts.lanFill.firstByteMs).toBe(8000);
    expect(await failure(['client'], `{ services.nix-lan-cache = { enable = true; settings.timeouts.lanFill.hedgeMs = 100; }; }`)).toMatch(/hedgeMs/);
  });

  it('makes the proxy the only substituter, trusts the LAN key and keeps misses briefly', async () => {
    const s = await summary(['client'], machine);
    expect(s.nix.settings.substituters).toEqual(['http://127.0.0.1:37515']);
    expect(s.nix.settings['trusted-public-keys']).toEqual([CACHE_NIXOS_ORG_KEY, PI_KEY]);
    expect(s.nix.settings['narinfo-cache-negative-ttl']).toBe(60);
    expect(s.nix.settings.fallback).toBe(true);
    expect(s.networking.firewall.allowedUDPPorts).toEqual([5353]);
    expect(s.systemPackages).toEqual(['nix-lan-cache']);
  });

  it('follows listen, mdns and the TTL option', async () => {
    const s = await summary(['client'], `{
      services.nix-lan-cache = { enable = true; listen = "0.0.0.0:8000"; mdns = false; narinfoNegativeTtl = 5; logLevel = "debug"; priority = 10; };
    }`);
    expect(s.nix.settings.substituters).toEqual(['http://127.0.0.1:8000']);
    expect(s.nix.settings['narinfo-cache-negative-ttl']).toBe(5);
    expect(s.networking.firewall.allowedUDPPorts).toEqual([]);
    const cfg = parseConfigFile(readFileSync(configFileOf(s.systemd.services['nix-lan-cache'].serviceConfig.ExecStart), 'utf8'), 'x');
    expect(cfg).toMatchObject({ listen: '0.0.0.0:8000', mdns: false, logLevel: 'debug', priority: 10 });
    expect(cfg.trustedPublicKeys).toEqual([]);
  });

  it('share and peers: off by default; on, the share is in a config file the CLI accepts and its port is opened', async () => {
    const off = await summary(['client'], `{ services.nix-lan-cache.enable = true; }`);
    const offFile = JSON.parse(readFileSync(configFileOf(off.systemd.services['nix-lan-cache'].serviceConfig.ExecStart), 'utf8'));
    expect(offFile).not.toHaveProperty('share');
    expect(offFile).not.toHaveProperty('peer');
    expect(offFile).not.toHaveProperty('peering');
    expect(resolveServeConfig({ config: configFileOf(off.systemd.services['nix-lan-cache'].serviceConfig.ExecStart) }).share.enable).toBe(false);
    expect(off.networking.firewall.allowedTCPPorts).toEqual([]);

    const s = await summary(['client'], `{
      services.nix-lan-cache = {
        enable = true;
        share.enable = true;
        share.allow = [ "192.168.1.0/24" ];
        settings.share.clientBytesPerSecond = 5000000;
        peers = [ "http://192.168.1.21:37517/" ];
        peerOrder = "after-upstream";
        settings.peering.fanout = 2;
        settings.timeouts.peer.hedgeMs = 150;
      };
    }`);
    const svc = s.systemd.services['nix-lan-cache'];
    const file = configFileOf(svc.serviceConfig.ExecStart);
    expect(JSON.parse(readFileSync(file, 'utf8'))).toMatchObject({
      share: { enable: true, listen: 'lan:37517', allow: ['192.168.1.0/24'], store: '/', clientBytesPerSecond: 5000000 },
      peer: ['http://192.168.1.21:37517/'],
      peering: { order: 'after-upstream', fanout: 2 },
      timeouts: { peer: { hedgeMs: 150 } },
    });
    const resolved = resolveServeConfig({ config: file });
    expect(resolved.share).toMatchObject({ enable: true, listen: { host: 'lan', port: 37517 }, store: '/', allow: ['192.168.1.0/24'], clientBytesPerSecond: 5000000, maxInFlight: 64 });
    expect(resolved.peer).toEqual(['http://192.168.1.21:37517/']);
    expect(resolved.peering).toMatchObject({ order: 'after-upstream', fanout: 2 });
    expect(resolved.timeouts.peer.hedgeMs).toBe(150);
    // The share's port is opened (the share itself still serves only `allow`); mDNS stays open for announcing.
    expect(s.networking.firewall.allowedTCPPorts).toEqual([37517]);
    expect(s.networking.firewall.allowedUDPPorts).toEqual([5353]);
    expect(svc.serviceConfig).toMatchObject({ DynamicUser: true, ProtectSystem: 'strict', CapabilityBoundingSet: '', PrivateUsers: true });

    // A share on a port below 1024 gets the one capability it needs; openFirewall = false opens nothing.
    const low = await summary(['client'], `{ services.nix-lan-cache = { enable = true; share = { enable = true; listen = "lan:873"; openFirewall = false; }; }; }`);
    expect(low.systemd.services['nix-lan-cache'].serviceConfig).toMatchObject({ CapabilityBoundingSet: 'CAP_NET_BIND_SERVICE', AmbientCapabilities: ['CAP_NET_BIND_SERVICE'], PrivateUsers: false });
    expect(low.networking.firewall.allowedTCPPorts).toEqual([]);
    expect(await failure(['client'], `{ services.nix-lan-cache = { enable = true; share.listen = "lan"; }; }`)).toMatch(/share\.listen' is not of type `lan:PORT/);
  });

  it('sets nothing when not enabled', async () => {
    const s = await summary(['client'], '{ }');
    expect(s.systemd.services).toEqual({});
    expect(s.nix.settings.substituters).toEqual(['https://cache.nixos.org/']);
  });

  it('rejects a listen that is not HOST:PORT', async () => {
    const err = await failure(['client'], '{ services.nix-lan-cache = { enable = true; listen = 5; }; }');
    expect(err).toMatch(/option `services\.nix-lan-cache\.listen' is not of type `HOST:PORT \(e\.g\. 127\.0\.0\.1:37515 or \[::1\]:37515\)'/);
    const err2 = await failure(['client'], '{ services.nix-lan-cache = { enable = true; listen = "localhost:70000"; }; }');
    expect(err2).toMatch(/services\.nix-lan-cache\.listen' is not of type `HOST:PORT/);
  });

  it('rejects a malformed public key, naming the expected form', async () => {
    const err = await failure(['client'], '{ services.nix-lan-cache = { enable = true; trustedPublicKeys = [ "pi.lan-1" ]; }; }');
    expect(err).toMatch(/services\.nix-lan-cache\.trustedPublicKeys.*' is not of type `Nix public key NAME:BASE64 \(as written by nix-store --generate-binary-cache-key/);
  });

  it('rejects an unknown setting (the CLI would refuse it at start)', async () => {
    const err = await failure(['client'], '{ services.nix-lan-cache = { enable = true; settings.timeouts.lan.conectMs = 5; }; }');
    expect(err).toMatch(/The option `services\.nix-lan-cache\.settings\.timeouts\.lan\.conectMs' does not exist/);
  });
});

describe('Pi module (services.nix-lan-cache.pi)', () => {
  const pi = (extra = '') => `{
    services.nix-lan-cache.pi = {
      enable = true;
      keyName = "pi.lan-1";
      authorizedKeys = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx root@build" "from=\\"10.0.0.2\\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHy ci" ];
      ${extra}
    };
  }`;

  it('serves the cache dir with nginx, with content types and cache headers', async () => {
    const s = await summary(['pi'], pi());
    const vhost = s.services.nginx.virtualHosts['nix-lan-cache'];
    expect(s.services.nginx.enable).toBe(true);
    expect(vhost.root).toBe('/var/lib/nix-cache');
    expect(vhost.listen.map((l: any) => `${l.addr}:${l.port}`)).toEqual(['0.0.0.0:8080', '[::]:8080']);
    const loc = vhost.locations;
    expect(loc['= /nix-cache-info'].extraConfig).toContain('default_type text/x-nix-cache-info;');
    expect(loc['~ ^/[^/]+\\.narinfo$'].extraConfig).toContain('default_type text/x-nix-narinfo;');
    expect(loc['~ ^/[^/]+\\.narinfo$'].extraConfig).toContain('max-age=60');
    expect(loc['^~ /nar/'].extraConfig).toContain('default_type application/x-nix-nar;');
    expect(loc['^~ /nar/'].extraConfig).toContain('max-age=31536000, immutable');
    expect(s.networking.firewall.allowedTCPPorts).toEqual([8080]);
    expect(s.systemd.tmpfiles.rules).toEqual(['d /var/lib/nix-cache 0755 nix-cache nix-cache - -']);
  });

  it('gives the push user a shell and restricted SSH keys', async () => {
    const s = await summary(['pi'], pi());
    expect(s.users.users['nix-cache']).toMatchObject({ isSystemUser: true, group: 'nix-cache', home: '/var/lib/nix-cache', useDefaultShell: true });
    expect(s.users.users['nix-cache'].openssh.authorizedKeys.keys).toEqual([
      'restrict ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx root@build',
      'from="10.0.0.2" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHy ci',
    ]);
  });

  it('announces with an Avahi service file carrying the contract TXT records', async () => {
    const s = await summary(['pi'], pi('announce.priority = 20;'));
    expect(s.services.avahi).toMatchObject({ enable: true, publish: { enable: true, userServices: true } });
    const xml: string = s.services.avahi.extraServiceFiles['nix-cache'];
    expect(xml).toContain('<type>_nix-cache._tcp</type>');
    expect(xml).toContain('<port>8080</port>');
    expect(xml).toContain('<txt-record>path=/</txt-record>');
    expect(xml).toContain('<txt-record>key=pi.lan-1</txt-record>');
    expect(xml).toContain('<txt-record>priority=20</txt-record>');
    expect(s.systemd.services).not.toHaveProperty('nix-lan-cache-announce');
  });

  it('or runs `nix-lan-cache announce` instead of Avahi', async () => {
    const s = await summary(['pi'], pi('announce.method = "nix-lan-cache"; port = 80; path = "/cache/";'));
    expect(s.services.avahi.enable).toBe(false);
    const exec: string = s.systemd.services['nix-lan-cache-announce'].serviceConfig.ExecStart;
    expect(exec).toMatch(/\/bin\/nix-lan-cache announce --port 80 --path \/cache\/ --key-name pi\.lan-1$/);
    expect(s.systemd.services['nix-lan-cache-announce'].serviceConfig.DynamicUser).toBe(true);
    expect(s.networking.firewall.allowedUDPPorts).toEqual([5353]);
    expect(s.services.nginx.virtualHosts['nix-lan-cache'].locations).toHaveProperty(['^~ /cache/nar/']);
  });

  it('runs gc on a timer as the cache owner, without network', async () => {
    const s = await summary(['pi'], pi('gc = { keep = 5; keepDays = 30; dates = "weekly"; };'));
    const gc = s.systemd.services['nix-lan-cache-gc'].serviceConfig;
    expect(gc.ExecStart).toMatch(/\/bin\/nix-lan-cache gc --cache \/var\/lib\/nix-cache --keep 5 --keep-days 30$/);
    expect(gc).toMatchObject({ Type: 'oneshot', User: 'nix-cache', PrivateNetwork: true, ReadWritePaths: ['/var/lib/nix-cache'] });
    expect(s.systemd.timers['nix-lan-cache-gc']).toMatchObject({ wantedBy: ['timers.target'], timerConfig: { OnCalendar: 'weekly', Persistent: true } });
  });

  it('refuses a cache dir nginx cannot read, and a key name with the key in it', async () => {
    const s = await summary(['pi'], pi('cacheDir = "/home/pi/cache";'));
    expect(s.failedAssertions).toEqual([expect.stringMatching(/cacheDir = \/home\/pi\/cache: nginx runs with ProtectHome/)]);
    const err = await failure(['pi'], `{ services.nix-lan-cache.pi = { enable = true; keyName = "${PI_KEY}"; }; }`);
    expect(err).toMatch(/services\.nix-lan-cache\.pi\.keyName' is not of type `key name without the `:KEY` part/);
  });
});

describe('build-server module (services.nix-lan-cache.buildServer)', () => {
  const bs = (extra = '') => `{
    services.nix-lan-cache.buildServer = {
      enable = true;
      flake = "git@example.org:me/nixos-config.git";
      machines = [ "laptop" "desktop" ];
      target = "ssh://nix-cache@pi.lan/var/lib/nix-cache";
      keyFile = "/var/lib/secrets/pi.lan-1.sk";
      ${extra}
    };
  }`;

  it('runs a daily oneshot with the signing key as a credential', async () => {
    const s = await summary(['build-server'], bs('sshKeyFile = "/var/lib/secrets/push"; compression = "zstd";'));
    const svc = s.systemd.services['nix-lan-cache-build'];
    expect(svc.environment).toMatchObject({
      FLAKE_REPO: 'git@example.org:me/nixos-config.git',
      MACHINES: 'laptop desktop',
      PUSH_TARGET: 'ssh://nix-cache@pi.lan/var/lib/nix-cache',
      KEY_FILE: '%d/signing-key',
      COMPRESSION: 'zstd',
      UPDATE_INPUTS: '1',
    });
    expect(svc.serviceConfig).toMatchObject({
      Type: 'oneshot',
      DynamicUser: true,
      LoadCredential: ['signing-key:/var/lib/secrets/pi.lan-1.sk', 'ssh-key:/var/lib/secrets/push'],
    });
    expect(svc.serviceConfig.ExecStart).toMatch(/^\/nix\/store\/[a-z0-9]{32}-nix-lan-cache-build\/bin\/nix-lan-cache-build$/);
    expect(s.systemd.timers['nix-lan-cache-build'].timerConfig).toMatchObject({ OnCalendar: '04:00', Persistent: true });
  });

  it('refuses a signing key in the Nix store and an empty machine list', async () => {
    const err = await failure(['build-server'], bs().replace('/var/lib/secrets/pi.lan-1.sk', '/nix/store/aaaa-key.sk'));
    expect(err).toMatch(/buildServer\.keyFile' is not of type `absolute path outside the Nix store/);
    const err2 = await failure(['build-server'], bs().replace('[ "laptop" "desktop" ]', '[ ]'));
    expect(err2).toMatch(/buildServer\.machines' is not of type `non-empty \(list of nixosConfigurations name\)'/);
  });

  it('can be imported together with the client and Pi modules', async () => {
    const s = await summary(['client', 'pi', 'build-server'], `{
      imports = [ ${bs()} ];
      services.nix-lan-cache = { enable = true; trustedPublicKeys = [ "${PI_KEY}" ]; };
      services.nix-lan-cache.pi = { enable = true; keyName = "pi.lan-1"; };
    }`);
    expect(Object.keys(s.systemd.services).sort()).toEqual(['nix-lan-cache', 'nix-lan-cache-build', 'nix-lan-cache-gc']);
  });
});

describe('home-manager module', () => {
  it('defines a user service and the nix.conf lines to copy', async () => {
    const s = await summary(['home-manager'], `{ services.nix-lan-cache = { enable = true; trustedPublicKeys = [ "${PI_KEY}" ]; }; }`, 'home-manager');
    const unit = s.userServices['nix-lan-cache'];
    expect(unit.Install.WantedBy).toEqual(['default.target']);
    const m = /^(\/nix\/store\/\S+\/bin\/nix-lan-cache) serve --config (\S+) --state-dir %S\/nix-lan-cache$/.exec(unit.Service.ExecStart);
    expect(m).not.toBeNull();
    const cfg = parseConfigFile(readFileSync(m![2]!, 'utf8'), m![2]!);
    expect(cfg).not.toHaveProperty('stateDir');
    expect(cfg.trustedPublicKeys).toEqual([PI_KEY]);
    expect(unit.Service).not.toHaveProperty('MemoryDenyWriteExecute');
    expect(cfg).not.toHaveProperty('share');
    const sharing = await summary(['home-manager'], `{ services.nix-lan-cache = { enable = true; share.enable = true; share.listen = "10.0.0.5:37517"; peers = [ "http://10.0.0.6:37517/" ]; }; }`, 'home-manager');
    const sm = /serve --config (\S+) /.exec(sharing.userServices['nix-lan-cache'].Service.ExecStart)!;
    const resolved = resolveServeConfig({ config: sm[1]! });
    expect(resolved.share).toMatchObject({ enable: true, listen: { host: '10.0.0.5', port: 37517 }, store: '/' });
    expect(resolved.peer).toEqual(['http://10.0.0.6:37517/']);
    expect(s.dataFiles['nix-lan-cache/nix.conf']).toBe(
      `substituters = http://127.0.0.1:37515\ntrusted-public-keys = ${CACHE_NIXOS_ORG_KEY} ${PI_KEY}\nnarinfo-cache-negative-ttl = 60\nfallback = true\n`,
    );
  });
});
