# home-manager: the proxy as a systemd user service, for machines with Nix but
# not NixOS. Nix itself (the daemon, /etc/nix/nix.conf) is configured by hand:
# see docs/laptop.md.
#
#   imports = [ nix-lan-cache.homeModules.default ];
#   services.nix-lan-cache = {
#     enable = true;
#     trustedPublicKeys = [ "pi.lan-1:…" ];
#   };
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkEnableOption mkOption mkIf types;
  serve = import ../lib/serve-options.nix { inherit lib; };
  cfg = config.services.nix-lan-cache;
  # The user unit passes --state-dir %S/nix-lan-cache (~/.local/state/nix-lan-cache).
  configFile = pkgs.writeText "nix-lan-cache.json" (builtins.toJSON (serve.configAttrs cfg null));
in
{
  options.services.nix-lan-cache = serve.options // {
    enable = mkEnableOption "the nix-lan-cache substituter proxy as a systemd user service";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ../package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./nix/package.nix { }";
      description = "The nix-lan-cache package.";
    };

    proxyUrl = mkOption {
      type = types.str;
      readOnly = true;
      default = serve.proxyUrl cfg;
      description = "The URL to put in /etc/nix/nix.conf as `substituters`.";
    };

    nixConf = mkOption {
      type = types.lines;
      readOnly = true;
      default = ''
        substituters = ${cfg.proxyUrl}
        trusted-public-keys = ${lib.concatStringsSep " " (serve.nixTrustedKeys cfg)}
        narinfo-cache-negative-ttl = 60
        fallback = true
      '';
      description = "The lines to add to /etc/nix/nix.conf (shown by `home-manager` as ~/.local/share/nix-lan-cache/nix.conf).";
    };
  };

  config = mkIf cfg.enable {
    home.packages = [ cfg.package ];

    # For copying into /etc/nix/nix.conf (needs root; see docs/laptop.md).
    xdg.dataFile."nix-lan-cache/nix.conf".text = cfg.nixConf;

    systemd.user.services.nix-lan-cache = {
      Unit = {
        Description = "nix-lan-cache substituter proxy (LAN cache first, then cache.nixos.org)";
        After = [ "network.target" ];
        X-Restart-Triggers = [ "${configFile}" ];
        # No start-rate limit: Nix has no other substituter, so the proxy always comes back.
        StartLimitIntervalSec = 0;
      };
      Service = {
        ExecStart = "${lib.getExe cfg.package} serve --config ${configFile} --state-dir %S/nix-lan-cache";
        StateDirectory = "nix-lan-cache";
        # NARs held back until verified that do not fit in memory are spooled here (unlinked files).
        CacheDirectory = "nix-lan-cache";
        # Back within a second if it ever dies (the fatal error is in the journal).
        Restart = "always";
        RestartSec = "500ms";
        TimeoutStopSec = 15;
        NoNewPrivileges = true;
        LockPersonality = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" "AF_NETLINK" ];
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" ];
        SystemCallErrorNumber = "EPERM";
      };
      Install.WantedBy = [ "default.target" ];
    };
  };
}
