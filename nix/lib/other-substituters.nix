# What the rest of a NixOS machine puts in nix.settings.substituters and
# trusted-public-keys, read without the client module's own definition (which
# forces `substituters` to the proxy alone). A module cannot read the value it
# overrides, so this merges nix.settings again, with the option's own type,
# over every definition except the one from `ownFile`: mkIf, mkDefault,
# mkAfter and mkForce in the other definitions mean what they mean on NixOS
# (cache.nixos.org is one such definition, from nixos/modules/config/nix.nix).
#   settingsOption: options.nix.settings
#   ownFile:        the `_file` of the module that sets the proxy as substituter
{ lib }:
settingsOption: ownFile:
let
  others = lib.filter (def: def.file != ownFile) settingsOption.definitionsWithLocations;
  # Neither option has a default on NixOS; without any definition they are empty here.
  fallback = {
    file = "${ownFile} (fallback)";
    value = {
      substituters = lib.mkOptionDefault [ ];
      trusted-public-keys = lib.mkOptionDefault [ ];
    };
  };
  settings = settingsOption.type.merge settingsOption.loc (others ++ [ fallback ]);

  # How the proxy names a cache: no Nix store parameters (`?priority=…`), no trailing slash.
  normalise = url: lib.removeSuffix "/" (builtins.head (builtins.match "([^?#]*).*" url));
  isHttp = url: builtins.match "https?://[^ ]+" url != null;
in
{
  inherit normalise;
  substituters = settings.substituters;
  trustedPublicKeys = settings.trusted-public-keys;
  # http(s) caches the proxy can ask, and the rest (s3://, ssh://, file://, daemon…), which it cannot.
  httpSubstituters = lib.unique (map normalise (lib.filter isHttp settings.substituters));
  otherSubstituters = lib.filter (url: !isHttp url) settings.substituters;
}
