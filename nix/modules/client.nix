# Laptops and desktops: the localhost substituter proxy as a hardened system
# service, and Nix pointed at it as its only substituter.
#
#   imports = [ nix-lan-cache.nixosModules.default ];
#   services.nix-lan-cache = {
#     enable = true;
#     trustedPublicKeys = [ "pi.lan-1:…" ];
#   };
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkEnableOption mkOption mkIf mkDefault mkForce types;
  serve = import ../lib/serve-options.nix { inherit lib; };
  hardening = import ../lib/hardening.nix;
  cfg = config.services.nix-lan-cache;

  stateDir = "/var/lib/nix-lan-cache";
  configFile = pkgs.writeText "nix-lan-cache.json" (builtins.toJSON (serve.configAttrs cfg stateDir));
  port = lib.toInt (lib.last (lib.splitString ":" cfg.listen));
in
{
  imports = [ ./common.nix ];

  options.services.nix-lan-cache = serve.options // {
    enable = mkEnableOption "the nix-lan-cache substituter proxy (LAN cache first, then cache.nixos.org)";

    openFirewall = mkOption {
      type = types.bool;
      default = cfg.mdns;
      defaultText = lib.literalExpression "config.services.nix-lan-cache.mdns";
      description = "Open UDP 5353 so mDNS answers from the Pi get through the firewall.";
    };

    configureNix = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Make the proxy Nix's only substituter (`nix.settings.substituters`, forced),
        trust the keys it passes through, and keep narinfo misses for only
        `narinfoNegativeTtl` seconds.
      '';
    };

    narinfoNegativeTtl = mkOption {
      type = types.ints.unsigned;
      default = 60;
      description = ''
        `narinfo-cache-negative-ttl` for Nix. Nix's default (3600 s) would hide a
        path the Pi has for an hour after Nix once asked while the Pi was away.
      '';
    };

    proxyUrl = mkOption {
      type = types.str;
      readOnly = true;
      default = serve.proxyUrl cfg;
      defaultText = lib.literalExpression ''"http://127.0.0.1:37515"'';
      description = "The substituter URL Nix uses (derived from `listen`).";
    };
  };

  config = mkIf cfg.enable {
    systemd.services.nix-lan-cache = {
      description = "nix-lan-cache substituter proxy";
      wantedBy = [ "multi-user.target" ];
      # Works offline too (it falls through to upstream and back): no network-online.
      after = [ "network.target" ];
      restartTriggers = [ configFile ];
      serviceConfig = hardening // {
        ExecStart = "${lib.getExe cfg.package} serve --config ${configFile}";
        Restart = "on-failure";
        RestartSec = 2;
        TimeoutStopSec = 15;

        DynamicUser = true;
        StateDirectory = "nix-lan-cache";
        StateDirectoryMode = "0700";
        UMask = "0077";
        WorkingDirectory = stateDir;

        CapabilityBoundingSet = if port < 1024 then "CAP_NET_BIND_SERVICE" else "";
        AmbientCapabilities = lib.optionals (port < 1024) [ "CAP_NET_BIND_SERVICE" ];
        PrivateUsers = port >= 1024;
        ProtectProc = "invisible";
        # AF_NETLINK: Node sees interface and address changes (re-browse mDNS).
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" "AF_NETLINK" ];
      };
    };

    networking.firewall.allowedUDPPorts = mkIf cfg.openFirewall [ 5353 ];

    nix.settings = mkIf cfg.configureNix {
      substituters = mkForce [ cfg.proxyUrl ];
      trusted-public-keys = serve.nixTrustedKeys cfg;
      narinfo-cache-negative-ttl = mkDefault cfg.narinfoNegativeTtl;
      # The proxy is on loopback: a refused connect fails at once; a short
      # timeout only matters if it ever hangs.
      connect-timeout = mkDefault 5;
      # A path Nix saw on the proxy earlier (positive TTL) but whose NAR cannot
      # be fetched now (Pi away, not upstream) is built instead of failing.
      fallback = mkDefault true;
    };

    environment.systemPackages = [ cfg.package ];
  };
}
