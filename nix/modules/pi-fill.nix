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
  s3 = import ../lib/s3-credentials.nix { inherit lib; };
  bucket = fcfg.bucket;
  spoolDir = "/var/lib/nix-lan-cache-fill";

  configFile = pkgs.writeText "nix-lan-cache-fill.json" (builtins.toJSON ({
    cache = if bucket != null then bucket else cfg.cacheDir;
    listen = "127.0.0.1:${toString fcfg.port}";
    upstream = fcfg.upstreams;
    trustedPublicKeys = fcfg.trustedPublicKeys;
    logLevel = fcfg.logLevel;
  } // lib.optionalAttrs (fcfg.maxSize != null) { maxSize = fcfg.maxSize; }
    // lib.optionalAttrs (bucket != null) { inherit spoolDir; }));

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

    bucket = mkOption {
      type = types.nullOr s3.s3UrlType;
      default = null;
      example = "s3://nix-cache?endpoint=https://s3.lab.example&region=garage";
      description = ''
        Keep the cache in an S3 bucket instead of `cacheDir` (a lab's cache;
        docs/lab.md): fill publishes what it fetches into the bucket and
        serves the bucket's paths too (nginx hands it every request, as
        `cacheDir` stays empty), and the gc timer collects the bucket.
        Credentials: `s3`.
      '';
    };

    s3 = s3.options "fill and gc, to read and write `bucket`";

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
      environment = s3.environment fcfg.s3;
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
      } // lib.optionalAttrs (bucket != null) ({
        # Downloads are checked here before they are uploaded.
        StateDirectory = "nix-lan-cache-fill";
        StateDirectoryMode = "0700";
      } // s3.serviceConfig fcfg.s3);
    };

    assertions = [{
      assertion = bucket == null || fcfg.s3.environmentFile != null || fcfg.s3.credentialsFile != null;
      message = "services.nix-lan-cache.pi.fill.bucket is set: give fill its credentials with services.nix-lan-cache.pi.fill.s3.environmentFile or .credentialsFile (never the Nix store).";
    }];

    # An empty cache directory hands nginx's every request to fill; Nix first asks for nix-cache-info.
    systemd.tmpfiles.rules = lib.optional (bucket != null) "f ${cfg.cacheDir}/nix-cache-info 0644 ${cfg.user} ${cfg.group} - StoreDir: /nix/store";

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

    systemd.services.nix-lan-cache-gc = mkIf cfg.gc.enable {
      # gc of a bucket talks to the bucket, with fill's credentials.
      environment = mkIf (bucket != null) (s3.environment fcfg.s3);
      serviceConfig = lib.mkMerge [
        {
          # A second gc run on the same timer holds the cache under maxSize.
          ExecStart = mkIf (fcfg.maxSize != null) [
            (lib.concatStringsSep " " [
              (lib.getExe pkg) "gc"
              "--cache" (lib.escapeShellArg (if bucket != null then bucket else cfg.cacheDir))
              "--keep" (toString cfg.gc.keep)
              "--keep-days" (toString cfg.gc.keepDays)
              "--max-size" fcfg.maxSize
            ])
          ];
        }
        (mkIf (bucket != null) ({
          PrivateNetwork = lib.mkForce false;
          RestrictAddressFamilies = lib.mkForce [ "AF_INET" "AF_INET6" "AF_UNIX" ];
        } // s3.serviceConfig fcfg.s3))
      ];
    };
  };
}
