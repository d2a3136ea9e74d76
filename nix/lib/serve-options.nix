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
      description = "Browse for `_nix-cache._tcp` caches on the local network (mDNS).";
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
      timeouts.upstream = originTimeouts "upstream";
      cache = {
        maxEntries = nullOrInt 1 10000000 "Narinfo lookups remembered in memory.";
        hitTtlSeconds = nullOrInt 0 2592000 "How long a narinfo hit is remembered (s).";
        missTtlSeconds = nullOrInt 0 86400 "How long a narinfo miss is remembered (s).";
        prefetchConcurrency = nullOrInt 0 256 "Narinfo lookups of the references of what Nix asked, ahead of Nix, at once (0: off; built-in 16).";
        narPrefetchBytes = nullOrInt 0 4294967296 "Bytes of uncompressed NAR fetched into memory ahead of Nix for the narinfos it asked for (0: off; built-in 32 MiB).";
        narPrefetchConcurrency = nullOrInt 1 64 "NAR fetches ahead of Nix at once (built-in 8).";
      };
    };
  };

  # The JSON config file `serve --config` reads (camelCase, unknown keys rejected).
  configAttrs = cfg: stateDir: dropEmpty ({
    inherit (cfg) listen lan mdns logLevel;
    upstream = cfg.upstreams;
    trustedPublicKeys = cfg.trustedPublicKeys;
  } // lib.optionalAttrs (cfg.lanFill != [ ]) { inherit (cfg) lanFill; }
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
