{
  description = "nix-lan-cache: a localhost Nix substituter that serves from a LAN binary cache when it is reachable and from cache.nixos.org when it is not";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      # What nixpkgs still supports (it throws on x86_64-darwin since 26.11).
      systems = [ "x86_64-linux" "aarch64-linux" "aarch64-darwin" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      # A module as an attribute set (what `nix flake check` expects of a module).
      module = path: { imports = [ path ]; };
    in
    {
      # For `nix run` / `nix profile install`. The modules do not use these:
      # they build the package from the machine's own `pkgs` (its nixpkgs pin,
      # config and overlays), see nix/modules/common.nix.
      packages = forAllSystems (pkgs: rec {
        nix-lan-cache = pkgs.callPackage ./nix/package.nix { };
        default = nix-lan-cache;
      });

      overlays.default = final: _prev: {
        nix-lan-cache = final.callPackage ./nix/package.nix { };
      };

      nixosModules = {
        client = module ./nix/modules/client.nix;
        pi = module ./nix/modules/pi.nix;
        build-server = module ./nix/modules/build-server.nix;
        default = self.nixosModules.client;
      };

      homeModules.default = module ./nix/modules/home-manager.nix;
      # The older name, still read by existing configurations.
      homeManagerModules = self.homeModules;

      formatter = forAllSystems (pkgs: pkgs.nixfmt-tree);

      # `nix develop`: Node 24 and the real tools the tests run (see README, .ci/run).
      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [ nodejs_24 nix nginx xz bzip2 zstd openssh curl ]
            ++ lib.optionals stdenv.hostPlatform.isLinux [ iproute2 avahi dbus systemd chromium ];
        };
      });

      checks = forAllSystems (pkgs: {
        package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      });
    };
}
