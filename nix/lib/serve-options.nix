# Options and config-file rendering shared by the NixOS client module and the
# home-manager module: both run `nix-lan-cache serve --config FILE`.
{ lib }:
let
  inherit (lib) mkOption types;

  cacheNixosOrgKey = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";

  # HOST:PORT, the form `serve --listen` takes ([::1]:PORT for IPv6).
  listenPattern = "([[][0-9a-fA-F:.]+[]]|[A-Za-z0-9._-]+):([0-9]{1,5})";
  listenType = types.addCheck (types.strMatching listenPattern)
    (s: lib.toInt (builtins.elemAt (builtins.match listenPattern s) 1) <= 65535) // {
      description = "HOST:PORT (e.g. 127.0.0.1:37515 or [::1]:37515)";
    };

  # A Nix public key: NAME:BASE64 of 32 bytes (what `nix-store --generate-binary-cache-key` writes).
  publicKeyType = lib.types.addCheck types.str
    (s: builtins.match "[^: ]+:[A-Za-z0-9+/]{43}=" s != null) // {
      name = "nixPublicKey";
      description = "Nix public key NAME:BASE64 (as written by nix-store --generate-binary-cache-key, e.g. pi.lan-1:AbC…=)";
    };

  # `serve --share-listen`: lan:PORT (every private LAN address) or HOST:PORT.
  shareListenType = types.addCheck (types.strMatching listenPattern)
    (s: lib.toInt (builtins.elemAt (builtins.match listenPattern s) 1) <= 65535) // {
      description = "lan:PORT (every private LAN address of the machine) or HOST:PORT";
    };

  # A peer's share is plain HTTP, never a bucket.
  httpUrlType = types.strMatching "https?://[^ ]+" // {
    description = "http:// or https:// URL";
  };

  # An S3 bucket (s3://BUCKET?endpoint=URL&region=R) is read with signed requests; its credentials: docs/lab.md.
  urlType = types.strMatching "(https?://[^ ]+|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\\?[^ ]*)?)" // {
    description = "http:// or https:// URL, or an S3 bucket s3://BUCKET?endpoint=URL&region=R";
  };

  nullOrInt = min: max: description: mkOption {
    type = types.nullOr (types.ints.between min max);
    default = null;
    inherit description;
  };

  originTimeouts = kind: fillingTimeouts kind // {
    hedgeMs = nullOrInt 0 600000 "A narinfo lookup to a ${kind} cache this slow (ms) is no longer waited on alone: the next caches are asked alongside (0: never).";
  };
  # A filling LAN cache is never hedged: no hedgeMs.
  fillingTimeouts = kind: {
    connectMs = nullOrInt 1 600000 "TCP connect timeout for ${kind} caches (ms); null keeps the built-in default.";
    firstByteMs = nullOrInt 1 600000 "Time to the complete response head from ${kind} caches (ms).";
    bodyIdleMs = nullOrInt 1 3600000 "Longest silence in the middle of a body from ${kind} caches (ms).";
    probeIntervalMs = nullOrInt 100 3600000 "Background probe interval while a ${kind} cache is considered down (ms).";
    maxFails = nullOrInt 1 1000 "Consecutive failures before a ${kind} cache is considered down.";
  };

  dropNulls = lib.filterAttrsRecursive (_: v: v != null);
  dropEmpty = lib.filterAttrs (_: v: !(builtins.isAttrs v && v == { }));
in
rec {
  inherit cacheNixosOrgKey listenType publicKeyType urlType;

  # The share's port, when it has a fixed one (the firewall opens it).
  sharePort = cfg: lib.toInt (lib.last (lib.splitString ":" cfg.share.listen));

  options = {
    listen = mkOption {
      type = listenType;
      default = "127.0.0.1:37515";
      example = "[::1]:37515";
      description = "HOST:PORT the proxy listens on. Nix is pointed at it.";
    };
    lan = mkOption {
      type = types.listOf urlType;
      default = [ ];
      example = [ "http://pi.local:8080/" ];
      description = "Static LAN caches (the Pi) asked first, in addition to any found by mDNS.";
    };
    lanFill = mkOption {
      type = types.listOf urlType;
      default = [ ];
      example = [ "http://pi.local:8080/" ];
      description = ''
        Static LAN caches that fill themselves from upstream on a miss
        (`nix-lan-cache fill` behind nginx; docs/fill.md): asked first and
        waited for instead of raced against the upstreams, so a path crosses
        the internet once for the household. Name such a cache here, not
        also in `lan`. A Pi found by mDNS says so itself (`fill=1`).
      '';
    };
    upstreams = mkOption {
      type = types.listOf urlType;
      default = [ "https://cache.nixos.org" ];
      description = "Caches asked, in order, when no LAN cache has a path.";
    };
    trustedPublicKeys = mkOption {
      type = types.listOf publicKeyType;
      default = [ ];
      example = [ "pi.lan-1:5Xkq8c0YV8nJx0aZ8p6dXh3yXbq6cXo8lP1jT9kqW9E=" ];
      description = ''
        Public keys of the LAN cache(s) (and of any extra upstream).
        cache.nixos.org's key is always trusted. A cache found by mDNS is used
        only if its advertised key name is one of these.
      '';
    };
    mdns = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Browse for `_nix-cache._tcp` caches and other machines' shares
        (`_nix-peer._tcp`) on the local network, and announce this
        machine's share when `share.enable` (mDNS).
      '';
    };
    share = {
      enable = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Serve other machines on the LAN the paths of this machine's Nix
          store that carry a signature by a trusted key (cache.nixos.org's,
          the house build server's): `serve --share`. A path built here,
          unsigned, or signed only by keys not trusted is never served nor
          listed. See docs/sharing.md.
        '';
      };
      listen = mkOption {
        type = shareListenType;
        default = "lan:37517";
        example = "192.168.1.20:37517";
        description = ''
          Where the share listens: `lan:PORT` is every private address the
          machine has (RFC 1918, link-local, IPv6 unique-local; never
          loopback or a public address), following interfaces as they come
          and go; HOST:PORT is that address only.
        '';
      };
      allow = mkOption {
        type = types.nullOr (types.listOf types.str);
        default = null;
        example = [ "192.168.1.0/24" ];
        description = "Networks (CIDR) whose machines may use the share; null keeps the built-in private ranges (10/8, 172.16/12, 192.168/16, 169.254/16, fc00::/7, fe80::/10, loopback).";
      };
      store = mkOption {
        type = types.str;
        default = "/";
        description = "The Nix store shared, as Nix's `--store DIR` names it: `/` is the system store.";
      };
    };
    peers = mkOption {
      type = types.listOf httpUrlType;
      default = [ ];
      example = [ "http://192.168.1.20:37517/" ];
      description = "Other machines' shares (`serve --peer`), asked after the LAN caches, in addition to any found by mDNS.";
    };
    peerOrder = mkOption {
      type = types.enum [ "before-upstream" "after-upstream" ];
      default = "before-upstream";
      description = "Whether peers are asked before the upstreams (the default) or only for what the upstreams lack or cannot answer.";
    };
    logLevel = mkOption {
      type = types.enum [ "fatal" "error" "warn" "info" "debug" "trace" "silent" ];
      default = "info";
      description = "Log level.";
    };
    priority = mkOption {
      type = types.nullOr (types.ints.between 0 1000);
      default = null;
      description = "`Priority` in the proxy's nix-cache-info; null keeps the built-in default (30).";
    };
    settings = {
      timeouts.lan = originTimeouts "LAN";
      timeouts.lanFill = fillingTimeouts "filling LAN";
      timeouts.peer = originTimeouts "peer";
      timeouts.upstream = originTimeouts "upstream";
      cache = {
        maxEntries = nullOrInt 1 10000000 "Narinfo lookups remembered in memory.";
        hitTtlSeconds = nullOrInt 0 2592000 "How long a narinfo hit is remembered (s).";
        missTtlSeconds = nullOrInt 0 86400 "How long a narinfo miss is remembered (s).";
        prefetchConcurrency = nullOrInt 0 256 "Narinfo lookups of the references of what Nix asked, ahead of Nix, at once (0: off; built-in 16).";
        narPrefetchBytes = nullOrInt 0 4294967296 "Bytes of uncompressed NAR fetched into memory ahead of Nix for the narinfos it asked for (0: off; built-in 32 MiB).";
        narPrefetchConcurrency = nullOrInt 1 64 "NAR fetches ahead of Nix at once (built-in 8).";
        holdMaxSeconds = nullOrInt 0 240 "A LAN cache's or peer's NAR that another origin could serve is held back until verified, at most this long (0: never held; built-in 60).";
        spoolDir = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "Where NARs held back that do not fit in memory are spooled (\"\": nowhere, they are streamed; built-in: the service's CacheDirectory).";
        };
        spoolBytes = nullOrInt 0 1099511627776 "Bytes of NAR spooled at once, at most (built-in 4 GiB).";
      };
      share = {
        maxInFlight = nullOrInt 1 10000 "Requests to the share in flight at once, all clients together (built-in 64).";
        clientMaxInFlight = nullOrInt 1 10000 "Requests of one client in flight at once (built-in 32).";
        clientRequestsPerSecond = nullOrInt 1 1000000 "Requests one client may start per second, sustained (built-in 500).";
        clientBurst = nullOrInt 1 1000000 "… and in a burst (built-in 2000).";
        clientBytesPerSecond = nullOrInt 0 107374182400 "NAR bytes per second to one client (built-in 0: no limit).";
      };
      peering = {
        fanout = nullOrInt 0 64 "Peers asked at once for one narinfo (built-in 4; 0: never ask peers).";
        missTtlSeconds = nullOrInt 0 3600 "How long a peer that lacked a path is not asked for it again (s; built-in 10).";
      };
    };
  };

  # The JSON config file `serve --config` reads (camelCase, unknown keys rejected).
  configAttrs = cfg: stateDir: dropEmpty ({
    inherit (cfg) listen lan mdns logLevel;
    upstream = cfg.upstreams;
    trustedPublicKeys = cfg.trustedPublicKeys;
  } // lib.optionalAttrs (cfg.lanFill != [ ]) { inherit (cfg) lanFill; }
    // lib.optionalAttrs cfg.share.enable {
    share = dropNulls ({ enable = true; inherit (cfg.share) listen allow store; } // cfg.settings.share);
  }
    // lib.optionalAttrs (cfg.peers != [ ]) { peer = cfg.peers; }
    // dropEmpty { peering = dropNulls ({ order = if cfg.peerOrder == "before-upstream" then null else cfg.peerOrder; } // cfg.settings.peering); }
    // lib.optionalAttrs (cfg.priority != null) { inherit (cfg) priority; }
    // lib.optionalAttrs (stateDir != null) { inherit stateDir; }
    // dropEmpty (dropNulls {
    timeouts = dropEmpty (dropNulls cfg.settings.timeouts);
    cache = dropNulls cfg.settings.cache;
  }));

  # The substituter URL Nix uses: a wildcard listen address is reached on loopback.
  proxyUrl = cfg:
    let
      m = builtins.match listenPattern cfg.listen;
      host = builtins.elemAt m 0;
      port = builtins.elemAt m 1;
      reachable = if host == "0.0.0.0" then "127.0.0.1" else if host == "[::]" then "[::1]" else host;
    in
    "http://${reachable}:${port}";

  # Keys Nix must trust: the proxy passes narinfos through with their signatures.
  nixTrustedKeys = cfg: lib.unique ([ cacheNixosOrgKey ] ++ cfg.trustedPublicKeys);
}
