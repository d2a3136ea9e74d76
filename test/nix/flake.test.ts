import { describe, expect, it } from 'vitest';
import { evalOk, nixpkgsLib, repoRoot } from './nix-eval.js';

/**
 * flake.nix's outputs, with a stand-in nixpkgs input: `legacyPackages` for the
 * systems nixpkgs supports, built from test/nix/fixtures/stub-pkgs.nix, and a
 * throw for x86_64-darwin as nixpkgs 26.11 does. The flake's own package is
 * named `flake-input-nix-lan-cache` so a machine can tell it from one built
 * from its own `pkgs`.
 */
const flakeExpr = (body: string) => `let
  lib = import ${nixpkgsLib};
  stubPkgs = import ${repoRoot}/test/nix/fixtures/stub-pkgs.nix { inherit lib; repoRoot = "${repoRoot}"; node = ${JSON.stringify(process.execPath)}; };
  inputPkgs = system: stubPkgs // {
    stdenv.hostPlatform = { inherit system; isLinux = lib.hasSuffix "-linux" system; };
    callPackage = path: args: (stubPkgs.callPackage path args) // { name = "flake-input-nix-lan-cache"; };
  };
  supported = [ "x86_64-linux" "aarch64-linux" "aarch64-darwin" ];
  nixpkgs = {
    inherit lib;
    legacyPackages = lib.genAttrs supported inputPkgs
      // { x86_64-darwin = throw "nixpkgs: x86_64-darwin is no longer supported"; };
  };
  flake = import ${repoRoot}/flake.nix;
  self = flake.outputs { inherit self nixpkgs; };
  nixos = modules: (lib.evalModules { modules = [
    ${repoRoot}/test/nix/fixtures/nixos-options.nix
    { _module.args.pkgs = stubPkgs; }
  ] ++ modules; }).config;
  home = modules: (lib.evalModules { modules = [
    ${repoRoot}/test/nix/fixtures/home-manager-options.nix
    { _module.args.pkgs = stubPkgs; }
  ] ++ modules; }).config;
in ${body}`;

describe('flake.nix (evaluated with a stand-in nixpkgs)', () => {
  it('has packages, a formatter and a Node 24 dev shell for every system nixpkgs supports, and no x86_64-darwin', async () => {
    const f = await evalOk(
      flakeExpr(`{
        inputs = flake.inputs;
        packages = lib.mapAttrs (_: lib.attrNames) self.packages;
        defaultPackage = self.packages.\${builtins.currentSystem}.default.name;
        formatter = lib.mapAttrs (_: p: p.name) self.formatter;
        devShells = lib.mapAttrs (_: s: map (p: p.name) s.default.packages) self.devShells;
        checks = lib.mapAttrs (_: lib.attrNames) self.checks;
      }`),
    );
    expect(f.inputs.nixpkgs.url).toMatch(/^github:NixOS\/nixpkgs\//);
    const systems = ['aarch64-darwin', 'aarch64-linux', 'x86_64-linux'];
    expect(Object.keys(f.packages).sort()).toEqual(systems);
    expect(f.packages['x86_64-linux']).toEqual(['default', 'nix-lan-cache']);
    expect(f.defaultPackage).toBe('flake-input-nix-lan-cache');
    expect(f.formatter).toEqual(Object.fromEntries(systems.map((s) => [s, 'nixfmt-tree'])));
    expect(Object.keys(f.checks).sort()).toEqual(systems);
    // What the tests need: Node 24, real Nix, nginx, the decompressors, and on Linux namespaces, avahi, systemd-analyze, chromium.
    expect(f.devShells['x86_64-linux']).toEqual(
      expect.arrayContaining(['nodejs-24', 'nix', 'nginx', 'xz', 'bzip2', 'zstd', 'openssh', 'iproute2', 'avahi', 'dbus', 'systemd', 'chromium']),
    );
    expect(f.devShells['aarch64-darwin']).toContain('nodejs-24');
    expect(f.devShells['aarch64-darwin']).not.toContain('systemd');
  });

  it("its modules build the package from the machine's own pkgs, not from the flake's nixpkgs input", async () => {
    const f = await evalOk(
      flakeExpr(`{
        nixosModules = lib.attrNames self.nixosModules;
        client = (nixos [ self.nixosModules.default { services.nix-lan-cache.enable = true; } ]).services.nix-lan-cache.package.name;
        all = let c = nixos [ self.nixosModules.default self.nixosModules.client self.nixosModules.pi self.nixosModules.build-server {
          services.nix-lan-cache.enable = true;
          services.nix-lan-cache.pi = { enable = true; keyName = "pi.lan-1"; };
        } ]; in { package = c.services.nix-lan-cache.package.name; services = lib.attrNames c.systemd.services; };
        homeModules = lib.attrNames self.homeModules;
        aliasIsSame = self.homeManagerModules == self.homeModules;
        home = (home [ self.homeModules.default { services.nix-lan-cache.enable = true; } ]).services.nix-lan-cache.package.name;
      }`),
    );
    expect(f.nixosModules).toEqual(['build-server', 'client', 'default', 'pi']);
    expect(f.client).toBe('nix-lan-cache');
    // Importing several of the modules (and `default` next to `client`) declares everything once.
    expect(f.all).toEqual({ package: 'nix-lan-cache', services: ['nix-lan-cache', 'nix-lan-cache-gc'] });
    expect(f.homeModules).toEqual(['default']);
    expect(f.aliasIsSame).toBe(true);
    expect(f.home).toBe('nix-lan-cache');
  });
});
