{
  description = "nix-lan-cache: a localhost Nix substituter that serves from a LAN binary cache when it is reachable and from cache.nixos.org when it is not";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      # Modules default to this flake's package rather than building it again.
      # The `key` makes the module system keep one copy when a machine imports
      # several of the modules (a build server that is also a client).
      packageDefault = { pkgs, lib, ... }: {
        key = "nix-lan-cache#packageDefault";
        config.services.nix-lan-cache.package =
          lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      };
      withPackage = module: { imports = [ module packageDefault ]; };
    in
    {
      packages = forAllSystems (pkgs: rec {
        nix-lan-cache = pkgs.callPackage ./nix/package.nix { };
        default = nix-lan-cache;
      });

      overlays.default = final: _prev: {
        nix-lan-cache = final.callPackage ./nix/package.nix { };
      };

      nixosModules = {
        client = withPackage ./nix/modules/client.nix;
        pi = withPackage ./nix/modules/pi.nix;
        build-server = withPackage ./nix/modules/build-server.nix;
        default = self.nixosModules.client;
      };

      homeManagerModules.default = withPackage ./nix/modules/home-manager.nix;

      checks = forAllSystems (pkgs: {
        package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      });
    };
}
