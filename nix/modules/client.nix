# Laptops and desktops: the localhost substituter proxy as a hardened system
# service, and Nix pointed at it as its only substituter.
#
#   imports = [ nix-lan-cache.nixosModules.default ];
#   services.nix-lan-cache = {
#     enable = true;
#     trustedPublicKeys = [ "pi.lan-1:…" ];
#   };
#
# In a lab whose cache is a bucket (docs/lab.md):
#     lan = [ "s3://nix-cache?endpoint=https://s3.lab.example&region=garage" ];
#     s3.environmentFile = "/run/secrets/nix-cache-read.env";
{ config, options, lib, pkgs, ... }:
let
  inherit (lib) mkEnableOption mkOption mkIf mkDefault mkForce types;
  serve = import ../lib/serve-options.nix { inherit lib; };
  s3 = import ../lib/s3-credentials.nix { inherit lib; };
  hardening = import ../lib/hardening.nix;
  cfg = config.services.nix-lan-cache;

  # The file name of this module's nix.settings definition, so that the
  # machine's other definitions can be read without it (no recursion).
  ownSettingsFile = "${toString ./client.nix}#nix.settings";
  others = import ../lib/other-substituters.nix { inherit lib; } options.nix.settings ownSettingsFile;

  # The proxy asks `upstreams`, then `extraUpstreams`, each cache once.
  allUpstreams = lib.foldl
    (acc: url: if lib.any (u: others.normalise u == others.normalise url) acc then acc else acc ++ [ url ])
    [ ]
    (lib.filter (url: others.normalise url != others.normalise cfg.proxyUrl) (cfg.upstreams ++ cfg.extraUpstreams));
  allKeys = lib.unique (cfg.trustedPublicKeys ++ cfg.extraTrustedPublicKeys);

  stateDir = "/var/lib/nix-lan-cache";
  configFile = pkgs.writeText "nix-lan-cache.json" (builtins.toJSON
    (serve.configAttrs (cfg // { upstreams = allUpstreams; trustedPublicKeys = allKeys; }) stateDir));
  port = lib.toInt (lib.last (lib.splitString ":" cfg.listen));
  # Ports below 1024 need CAP_NET_BIND_SERVICE: the proxy's, or the share's.
  lowPort = port < 1024 || (cfg.share.enable && serve.sharePort cfg < 1024);

  # Nix is pointed at the proxy alone; what else it had becomes upstreams above.
  nixSettings = {
    _file = ownSettingsFile;
    config = mkIf (cfg.enable && cfg.configureNix) {
      nix.settings = {
        substituters = mkForce [ cfg.proxyUrl ];
        # Keys the rest of the machine already trusts are not repeated.
        trusted-public-keys = lib.subtractLists others.trustedPublicKeys (serve.nixTrustedKeys cfg);
        narinfo-cache-negative-ttl = mkDefault cfg.narinfoNegativeTtl;
        # The proxy is on loopback: a refused connect fails at once; a short
        # timeout only matters if it ever hangs.
        connect-timeout = mkDefault 5;
        # A path Nix saw on the proxy earlier (positive TTL) but whose NAR cannot
        # be fetched now (Pi away, not upstream) is built instead of failing.
        fallback = mkDefault true;
      };
    };
  };
in
{
  imports = [ ./common.nix nixSettings ];

  options.services.nix-lan-cache = serve.options // {
    enable = mkEnableOption "the nix-lan-cache substituter proxy (LAN cache first, then cache.nixos.org)";

    openFirewall = mkOption {
      type = types.bool;
      default = cfg.mdns;
      defaultText = lib.literalExpression "config.services.nix-lan-cache.mdns";
      description = "Open UDP 5353 so mDNS answers from the Pi (and other machines' shares) get through the firewall.";
    };

    share = serve.options.share // {
      openFirewall = mkOption {
        type = types.bool;
        default = true;
        description = "Open the share's TCP port (when `share.enable`), so other machines on the LAN reach it. The share itself still serves only the `share.allow` networks.";
      };
    };

    configureNix = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Make the proxy Nix's only substituter (`nix.settings.substituters`, forced),
        trust the keys it passes through, and keep narinfo misses for only
        `narinfoNegativeTtl` seconds. The substituters the machine had
        otherwise become upstreams of the proxy (`extraUpstreams`).
      '';
    };

    extraUpstreams = mkOption {
      type = types.listOf serve.urlType;
      default = if cfg.configureNix then others.httpSubstituters else [ ];
      defaultText = lib.literalMD ''
        the http(s) substituters the rest of the configuration puts in
        `nix.settings.substituters` (cache.nixos.org, a cachix cache, …),
        without Nix store parameters such as `?priority=`; `[ ]` when
        `configureNix` is false
      '';
      example = [ "https://nix-community.cachix.org" ];
      description = ''
        Caches the proxy asks after `upstreams`. By default the substituters
        the machine had before this module made the proxy Nix's only one, so
        no cache is lost; set `[ ]` to drop them. Substituters that are not
        http(s) (s3://, ssh://, file://) cannot be asked by the proxy: they
        are left out with a warning.
      '';
    };

    extraTrustedPublicKeys = mkOption {
      type = types.listOf serve.publicKeyType;
      default = if cfg.configureNix then lib.remove serve.cacheNixosOrgKey others.trustedPublicKeys else [ ];
      defaultText = lib.literalMD "the keys the rest of the configuration puts in `nix.settings.trusted-public-keys` (cache.nixos.org's is built in)";
      description = ''
        Keys the proxy trusts besides `trustedPublicKeys`: by default every
        key Nix trusts on this machine, so the caches in `extraUpstreams`
        are served with their signatures checked.
      '';
    };

    s3 = s3.options "the proxy, to read the s3:// caches in `lan`, `lanFill` and `upstreams`";

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
      environment = s3.environment cfg.s3;
      # No start-rate limit: a proxy that crashed five times in a row still restarts.
      unitConfig.StartLimitIntervalSec = 0;
      serviceConfig = hardening // {
        ExecStart = "${lib.getExe cfg.package} serve --config ${configFile}";
        # Nix has no other substituter: the proxy always comes back, within a second.
        Restart = "always";
        RestartSec = "500ms";
        TimeoutStopSec = 15;

        DynamicUser = true;
        StateDirectory = "nix-lan-cache";
        StateDirectoryMode = "0700";
        # NARs held back until verified that do not fit in memory are spooled here (unlinked files).
        CacheDirectory = "nix-lan-cache";
        CacheDirectoryMode = "0700";
        UMask = "0077";
        WorkingDirectory = stateDir;

        CapabilityBoundingSet = if lowPort then "CAP_NET_BIND_SERVICE" else "";
        AmbientCapabilities = lib.optionals lowPort [ "CAP_NET_BIND_SERVICE" ];
        PrivateUsers = !lowPort;
        ProtectProc = "invisible";
        # AF_NETLINK: Node sees interface and address changes (re-browse mDNS).
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" "AF_NETLINK" ];
      } // s3.serviceConfig cfg.s3;
    };

    networking.firewall.allowedUDPPorts = mkIf cfg.openFirewall [ 5353 ];
    networking.firewall.allowedTCPPorts = mkIf (cfg.share.enable && cfg.share.openFirewall) [ (serve.sharePort cfg) ];

    warnings = lib.optionals cfg.configureNix (
      lib.optional (others.otherSubstituters != [ ])
        "services.nix-lan-cache: the proxy is now Nix's only substituter and cannot ask ${lib.concatStringsSep ", " others.otherSubstituters} (http and https only); paths only there are built instead. Set services.nix-lan-cache.configureNix = false to keep them and manage nix.settings yourself."
      # Another mkForce'd list merges with this module's: Nix then asks those caches directly.
      ++ (let extra = lib.remove cfg.proxyUrl config.nix.settings.substituters; in lib.optional (extra != [ ])
        "services.nix-lan-cache: nix.settings.substituters also lists ${lib.concatStringsSep ", " extra}, forced elsewhere (lib.mkForce): Nix asks it directly and waits on it while it is unreachable. The proxy already asks it (extraUpstreams); drop that mkForce, or set services.nix-lan-cache.configureNix = false.")
    );

    environment.systemPackages = [ cfg.package ];
  };
}
