# The Pi: nginx serves the static binary cache that the build server pushes
# into; the cache is announced on the LAN (Avahi, or `nix-lan-cache announce`);
# a timer runs `nix-lan-cache gc`.
#
#   imports = [ nix-lan-cache.nixosModules.pi ];
#   services.nix-lan-cache.pi = {
#     enable = true;
#     keyName = "pi.lan-1";
#     authorizedKeys = [ "ssh-ed25519 AAAA… root@buildserver" ];
#   };
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkEnableOption mkOption mkIf mkMerge types optional optionalString;
  cfg = config.services.nix-lan-cache.pi;
  pkg = config.services.nix-lan-cache.package;

  keyLine = k:
    # `restrict`: no forwarding, no pty. Pushing only needs to run commands.
    if builtins.match "(ssh-|ecdsa-|sk-).*" k != null then "restrict ${k}" else k;

  avahiService = ''
    <?xml version="1.0" standalone='no'?>
    <!DOCTYPE service-group SYSTEM "avahi-service.dtd">
    <service-group>
      <name replace-wildcards="yes">Nix binary cache on %h</name>
      <service>
        <type>_nix-cache._tcp</type>
        <port>${toString cfg.port}</port>
        <txt-record>path=${lib.escapeXML cfg.path}</txt-record>
        <txt-record>key=${lib.escapeXML cfg.keyName}</txt-record>
    ${optionalString (cfg.announce.priority != null) "    <txt-record>priority=${toString cfg.announce.priority}</txt-record>\n"}${optionalString cfg.fill.enable "    <txt-record>fill=1</txt-record>\n"}  </service>
    </service-group>
  '';

  hardening = import ../lib/hardening.nix;

in
{
  imports = [ ./common.nix ./pi-fill.nix ];

  options.services.nix-lan-cache.pi = {
    enable = mkEnableOption "serving a static Nix binary cache on the LAN (nginx, mDNS announcement, gc timer)";

    cacheDir = mkOption {
      type = types.strMatching "/.*[^/]" // { description = "absolute path without a trailing slash"; };
      default = "/var/lib/nix-cache";
      example = "/srv/nix-cache";
      description = "The static cache directory (nix-cache-info, *.narinfo, nar/, roots/). Put it on the big disk.";
    };

    port = mkOption {
      type = types.port;
      default = 8080;
      description = "HTTP port nginx serves the cache on (announced over mDNS).";
    };

    path = mkOption {
      type = types.strMatching "/([^ ]*/)?" // { description = "URL path starting and ending with /"; };
      default = "/";
      description = "URL path of the cache root (announced as `path=`).";
    };

    keyName = mkOption {
      type = types.strMatching "[^: ]+" // { description = "key name without the `:KEY` part, e.g. pi.lan-1"; };
      example = "pi.lan-1";
      description = ''
        Name part of the key that signs this cache (the `NAME` of `NAME:BASE64`),
        announced as `key=` so laptops only accept the cache if they trust that key.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = true;
      description = "Open the HTTP port (TCP) and mDNS (UDP 5353).";
    };

    user = mkOption {
      type = types.str;
      default = "nix-cache";
      description = "User that owns the cache directory; the build server pushes over SSH as this user.";
    };

    group = mkOption {
      type = types.str;
      default = "nix-cache";
      description = "Group of the cache directory.";
    };

    authorizedKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "ssh-ed25519 AAAAC3Nza… root@buildserver" ];
      description = "SSH public keys allowed to push into the cache (as `user`).";
    };

    announce = {
      method = mkOption {
        type = types.enum [ "avahi" "nix-lan-cache" "none" ];
        default = "avahi";
        description = ''
          How the cache is announced as `_nix-cache._tcp`: an Avahi service
          file (the usual way on NixOS), the `nix-lan-cache announce` service
          (no Avahi), or not at all (laptops then need `lan = [ URL ]`).
        '';
      };
      priority = mkOption {
        type = types.nullOr (types.ints.between 0 1000);
        default = null;
        description = "Announced `priority=` (lower wins when several caches answer).";
      };
    };

    gc = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = "Run `nix-lan-cache gc` on a timer.";
      };
      keep = mkOption {
        type = types.ints.positive;
        default = 3;
        description = "Keep the closures of the newest N pushes of each root (machine).";
      };
      keepDays = mkOption {
        type = types.ints.unsigned;
        default = 14;
        description = "Also keep anything pushed in the last D days.";
      };
      dates = mkOption {
        type = types.str;
        default = "daily";
        example = "Sun 05:00";
        description = "When gc runs (systemd OnCalendar).";
      };
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions = [{
        assertion = !(lib.any (p: lib.hasPrefix p cfg.cacheDir) [ "/home/" "/root/" "/run/user/" "/tmp/" ]);
        message = "services.nix-lan-cache.pi.cacheDir = ${cfg.cacheDir}: nginx runs with ProtectHome and PrivateTmp and cannot read it there; use a directory such as /var/lib/nix-cache or /srv/nix-cache.";
      }];

      users.users.${cfg.user} = {
        isSystemUser = true;
        inherit (cfg) group;
        home = cfg.cacheDir;
        # A real shell: `nix-lan-cache push --to ssh://…` runs commands here.
        useDefaultShell = true;
        openssh.authorizedKeys.keys = map keyLine cfg.authorizedKeys;
      };
      users.groups.${cfg.group} = { };

      systemd.tmpfiles.rules = [ "d ${cfg.cacheDir} 0755 ${cfg.user} ${cfg.group} - -" ];

      environment.systemPackages = [ pkg ];

      services.nginx = {
        enable = true;
        virtualHosts.nix-lan-cache = {
          default = true;
          # [::] only with IPv6 on, as NixOS's own nginx default decides
          # (binding it fails on a kernel without IPv6).
          listen = [ { addr = "0.0.0.0"; port = cfg.port; } ]
            ++ optional config.networking.enableIPv6 { addr = "[::]"; port = cfg.port; };
          root = cfg.cacheDir;
          extraConfig = ''
            autoindex off;
          '';
          locations = {
            # Push's half-written files (`.tmp-…`, also `.tmp-….narinfo`) and
            # other dot files are never served: this regex comes before the
            # narinfo one (lower priority number = earlier in the config).
            "~ /\\." = {
              priority = 100;
              return = "404";
            };
            "= ${cfg.path}nix-cache-info" = {
              alias = "${cfg.cacheDir}/nix-cache-info";
              extraConfig = ''
                types { } default_type text/x-nix-cache-info;
                add_header Cache-Control "public, max-age=300";
              '';
            };
            "~ ^${cfg.path}[^/]+\\.narinfo$" = {
              extraConfig = ''
                rewrite ^${cfg.path}(.*)$ /$1 break;
                types { } default_type text/x-nix-narinfo;
                # gc removes narinfos: clients must not keep them long.
                add_header Cache-Control "public, max-age=60";
              '';
            };
            "^~ ${cfg.path}nar/" = {
              alias = "${cfg.cacheDir}/nar/";
              extraConfig = ''
                # `^~` skips the regex locations above: refuse nar/.tmp-… here.
                location ~ /\. { return 404; }
                types { } default_type application/x-nix-nar;
                # A NAR's name is its hash: it never changes.
                add_header Cache-Control "public, max-age=31536000, immutable";
                gzip off;
              '';
            };
            "^~ ${cfg.path}roots/".return = "404";
          };
        };
      };

      networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall [ cfg.port ];
    }

    (mkIf (cfg.announce.method == "avahi") {
      services.avahi = {
        enable = true;
        openFirewall = cfg.openFirewall;
        publish.enable = true;
        publish.userServices = true;
        extraServiceFiles.nix-cache = avahiService;
      };
    })

    (mkIf (cfg.announce.method == "nix-lan-cache") {
      networking.firewall.allowedUDPPorts = mkIf cfg.openFirewall [ 5353 ];
      systemd.services.nix-lan-cache-announce = {
        description = "Announce the Nix binary cache on the LAN (mDNS _nix-cache._tcp)";
        wantedBy = [ "multi-user.target" ];
        after = [ "network.target" "nginx.service" ];
        serviceConfig = hardening // {
          ExecStart = lib.concatStringsSep " " ([
            (lib.getExe pkg) "announce"
            "--port" (toString cfg.port)
            "--path" cfg.path
            "--key-name" cfg.keyName
          ] ++ lib.optionals (cfg.announce.priority != null) [ "--priority" (toString cfg.announce.priority) ]
            ++ lib.optionals cfg.fill.enable [ "--fill" ]);
          Restart = "on-failure";
          RestartSec = 5;
          DynamicUser = true;
          PrivateUsers = true;
          RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" "AF_NETLINK" ];
        };
      };
    })

    (mkIf cfg.gc.enable {
      systemd.services.nix-lan-cache-gc = {
        description = "Delete old closures from the Nix binary cache";
        serviceConfig = hardening // {
          Type = "oneshot";
          ExecStart = lib.concatStringsSep " " [
            (lib.getExe pkg) "gc"
            "--cache" (lib.escapeShellArg (if cfg.fill.enable && cfg.fill.bucket != null then cfg.fill.bucket else cfg.cacheDir))
            "--keep" (toString cfg.gc.keep)
            "--keep-days" (toString cfg.gc.keepDays)
          ];
          User = cfg.user;
          Group = cfg.group;
          UMask = "0022";
          ReadWritePaths = [ cfg.cacheDir ];
          # gc only touches files.
          PrivateNetwork = true;
          RestrictAddressFamilies = [ "AF_UNIX" ];
          Nice = 10;
          IOSchedulingClass = "idle";
        };
      };
      systemd.timers.nix-lan-cache-gc = {
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnCalendar = cfg.gc.dates;
          Persistent = true;
          RandomizedDelaySec = "30min";
        };
      };
    })
  ]);
}
