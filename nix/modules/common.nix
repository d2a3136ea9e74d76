# Declared once, shared by the client, Pi and build-server modules (a machine
# may import several of them).
{ lib, pkgs, ... }:
{
  options.services.nix-lan-cache.package = lib.mkOption {
    type = lib.types.package;
    default = pkgs.callPackage ../package.nix { };
    defaultText = lib.literalExpression "pkgs.callPackage ./nix/package.nix { }";
    description = "The nix-lan-cache package.";
  };
}
