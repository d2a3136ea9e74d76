# The Pi fills itself: `nix-lan-cache fill` runs behind nginx, and what the
# cache directory lacks (a narinfo or NAR miss) nginx hands to it
# (`try_files $uri @fill`). It fetches the path from upstream, checks the
# signature and hashes, streams it to the client and publishes it in push's
# layout. See docs/fill.md.
#
#   services.nix-lan-cache.pi.fill = { enable = true; maxSize = "200G"; };
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkEnableOption mkOption mkIf types;
  cfg = config.services.nix-lan-cache.pi;
  fcfg = cfg.fill;
  pkg = config.services.nix-lan-cache.package;
  hardening = import ../lib/hardening.nix;

  configFile = pkgs.writeText "nix-lan-cache-fill.json" (builtins.toJSON ({
    cache = cfg.cacheDir;
    listen = "127.0.0.1:${toString fcfg.port}";
    upstream = fcfg.upstreams;
    trustedPublicKeys = fcfg.trustedPublicKeys;
    logLevel = fcfg.logLevel;
  } // lib.optionalAttrs (fcfg.maxSize != null) { maxSize = fcfg.maxSize; }));

  # fill answers paths relative to the cache root.
  stripPath = lib.optionalString (cfg.path != "/") "rewrite ^${cfg.path}(.*)$ /$1 break;\n";
in
{
  options.services.nix-lan-cache.pi.fill = {
    enable = mkEnableOption "filling the cache from upstream on a miss (`nix-lan-cache fill` behind nginx)";

    upstreams = mkOption {
      type = types.listOf types.str;
      default = [ "https://cache.nixos.org" ];
      description = "Upstream caches fill asks on a miss, in order.";
    };

    trustedPublicKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "nix-community.cachix.org-1:mB9FSh9qf2dCimDSUo8Zy7bkq5CX+/rkCWyvRCYg3Fs=" ];
      description = "Keys (NAME:BASE64) whose signatures fill accepts, besides cache.nixos.org's. A narinfo signed by no trusted key is a miss and is never stored.";
    };

    maxSize = mkOption {
      type = types.nullOr (types.strMatching "[0-9]+(\\.[0-9]+)?[KMGTkmgt]?(i?B)?");
      default = null;
      example = "200G";
      description = ''
        Size cap of the cache. fill stores nothing new while the cache is this
        big (it still serves the miss), and the gc timer evicts the least
        recently served paths not needed by a kept root until it is under it.
      '';
    };

    port = mkOption {
      type = types.port;
      default = 37516;
      description = "Port fill listens on, on 127.0.0.1 (only nginx talks to it).";
    };

    logLevel = mkOption {
      type = types.enum [ "fatal" "error" "warn" "info" "debug" "trace" "silent" ];
      default = "info";
      description = "fill's log level (pino JSON lines in the journal).";
    };
  };

  config = mkIf (cfg.enable && fcfg.enable) {
    systemd.services.nix-lan-cache-fill = {
      description = "Fill the Nix binary cache from upstream on a miss";
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
      before = [ "nginx.service" ];
      restartTriggers = [ configFile ];
      # No start-rate limit: a fill that crashed five times in a row still restarts.
      unitConfig.StartLimitIntervalSec = 0;
      serviceConfig = hardening // {
        ExecStart = "${lib.getExe pkg} fill --config ${configFile}";
        User = cfg.user;
        Group = cfg.group;
        UMask = "0022";
        ReadWritePaths = [ cfg.cacheDir ];
        # Back within a second if it ever dies: nginx answers from the cache meanwhile.
        Restart = "always";
        RestartSec = "500ms";
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
      };
    };

    services.nginx.virtualHosts.nix-lan-cache.locations = {
      "~ ^${cfg.path}[^/]+\\.narinfo$".tryFiles = "$uri @fill";
      "^~ ${cfg.path}nar/".tryFiles = "$uri @fill";
      "@fill" = {
        proxyPass = "http://127.0.0.1:${toString fcfg.port}";
        extraConfig = ''
          ${stripPath}proxy_http_version 1.1;
          proxy_set_header Connection "";
          # Pass NARs on as they arrive, and an aborted NAR as an aborted response.
          proxy_buffering off;
          proxy_read_timeout 300s;
        '';
      };
    };

    # A second gc run on the same timer holds the cache under maxSize.
    systemd.services.nix-lan-cache-gc.serviceConfig.ExecStart = mkIf (cfg.gc.enable && fcfg.maxSize != null) [
      (lib.concatStringsSep " " [
        (lib.getExe pkg) "gc"
        "--cache" cfg.cacheDir
        "--keep" (toString cfg.gc.keep)
        "--keep-days" (toString cfg.gc.keepDays)
        "--max-size" fcfg.maxSize
      ])
    ];
  };
}
