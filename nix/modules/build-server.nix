# The build server: a daily timer that updates the machines' flake, builds
# every machine's system closure and pushes it into the Pi's cache.
#
#   imports = [ nix-lan-cache.nixosModules.build-server ];
#   services.nix-lan-cache.buildServer = {
#     enable = true;
#     flake = "git@github.com:me/nixos-config.git";
#     machines = [ "laptop" "desktop" ];
#     target = "ssh://nix-cache@pi.local/var/lib/nix-cache";
#     keyFile = "/var/lib/secrets/pi.lan-1.sk";
#     sshKeyFile = "/var/lib/secrets/push-ssh-key";
#   };
#
# A lab pushes into a bucket instead (docs/lab.md):
#     target = "s3://nix-cache?endpoint=https://s3.lab.example&region=garage";
#     s3.environmentFile = "/var/lib/secrets/nix-cache-s3.env";
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkEnableOption mkOption mkIf types;
  cfg = config.services.nix-lan-cache.buildServer;
  pkg = config.services.nix-lan-cache.package;
  stateDir = "/var/lib/nix-lan-cache-build";

  s3 = import ../lib/s3-credentials.nix { inherit lib; };
  inherit (s3) secretPath;

  # `ssh` for git and for `push --to ssh://`: the pushing key, known hosts from
  # /etc/ssh/ssh_known_hosts (programs.ssh.knownHosts) or the state dir, no prompts.
  sshWrapper = pkgs.writeShellScriptBin "ssh" (lib.concatStringsSep " " ([
    "exec ${pkgs.openssh}/bin/ssh"
  ] ++ lib.optionals (cfg.sshKeyFile != null) [
    ''-i "$CREDENTIALS_DIRECTORY/ssh-key" -o IdentitiesOnly=yes''
  ] ++ [
    "-o UserKnownHostsFile=${stateDir}/known_hosts -o BatchMode=yes"
    ''"$@"''
  ]) + "\n");

  script = pkgs.writeShellApplication {
    name = "nix-lan-cache-build";
    runtimeInputs = [ sshWrapper pkg config.nix.package pkgs.git pkgs.coreutils pkgs.gnused ];
    text = builtins.readFile ../build-server/build-and-push.sh;
  };
in
{
  imports = [ ./common.nix ];

  options.services.nix-lan-cache.buildServer = {
    enable = mkEnableOption "the daily build of every machine's system and push into the LAN cache";

    flake = mkOption {
      type = types.str;
      example = "git@github.com:me/nixos-config.git";
      description = "Git URL (or local path) of the flake that defines `nixosConfigurations`. It is cloned into ${stateDir}/flake.";
    };

    branch = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "Branch to follow; null follows the remote's default branch.";
    };

    machines = mkOption {
      type = types.nonEmptyListOf (types.strMatching "[A-Za-z0-9_.-]+" // { description = "nixosConfigurations name"; });
      example = [ "laptop" "desktop" ];
      description = "The `nixosConfigurations.<name>` to build; each is pushed with `--root <name>`.";
    };

    target = mkOption {
      type = types.either (types.strMatching "(/|ssh://).+") s3.s3UrlType // { description = "cache directory (/…), ssh://[user@]host/path or s3://BUCKET?endpoint=URL&region=R"; };
      example = "ssh://nix-cache@pi.local/var/lib/nix-cache";
      description = ''
        Where `nix-lan-cache push --to` writes: the Pi's cache directory over
        ssh, a local directory, or an S3 bucket (docs/lab.md; credentials in
        `s3`).
      '';
    };

    s3 = s3.options "the push into an s3:// target";

    keyFile = mkOption {
      type = secretPath;
      example = "/var/lib/secrets/pi.lan-1.sk";
      description = "Nix secret key that signs the cache (nix-store --generate-binary-cache-key). Passed to the service with LoadCredential.";
    };

    sshKeyFile = mkOption {
      type = types.nullOr secretPath;
      default = null;
      example = "/var/lib/secrets/push-ssh-key";
      description = "SSH private key for the Pi (and a private git remote). Passed with LoadCredential.";
    };

    compression = mkOption {
      type = types.nullOr (types.enum [ "xz" "zstd" ]);
      default = null;
      description = "NAR compression; null keeps push's default (xz).";
    };

    updateInputs = mkOption {
      type = types.bool;
      default = true;
      description = "Run `nix flake update` before building.";
    };

    commitLockFile = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Commit the updated flake.lock and push it to the branch, so the machines
        rebuild with exactly the inputs that were built (and find them in the cache).
        Needs write access to the repository.
      '';
    };

    dates = mkOption {
      type = types.str;
      default = "04:00";
      description = "When the build runs (systemd OnCalendar).";
    };
  };

  config = mkIf cfg.enable {
    systemd.services.nix-lan-cache-build = {
      description = "Build every machine's system and push it into the LAN cache";
      wants = [ "network-online.target" ];
      after = [ "network-online.target" "nix-daemon.socket" ];
      environment = {
        FLAKE_REPO = cfg.flake;
        MACHINES = lib.concatStringsSep " " cfg.machines;
        PUSH_TARGET = cfg.target;
        KEY_FILE = "%d/signing-key";
        UPDATE_INPUTS = if cfg.updateInputs then "1" else "0";
        COMMIT_LOCK = if cfg.commitLockFile then "1" else "0";
        WORK_DIR = stateDir;
        HOME = stateDir;
        NIX_CONFIG = "experimental-features = nix-command flakes";
        GIT_AUTHOR_NAME = "nix-lan-cache";
        GIT_AUTHOR_EMAIL = "nix-lan-cache@localhost";
        GIT_COMMITTER_NAME = "nix-lan-cache";
        GIT_COMMITTER_EMAIL = "nix-lan-cache@localhost";
      } // s3.environment cfg.s3
        // lib.optionalAttrs (cfg.branch != null) { FLAKE_BRANCH = cfg.branch; }
        // lib.optionalAttrs (cfg.compression != null) { COMPRESSION = cfg.compression; };
      serviceConfig = {
        Type = "oneshot";
        ExecStart = lib.getExe script;
        DynamicUser = true;
        StateDirectory = "nix-lan-cache-build";
        StateDirectoryMode = "0700";
        LoadCredential = [ "signing-key:${cfg.keyFile}" ]
          ++ lib.optional (cfg.sshKeyFile != null) "ssh-key:${cfg.sshKeyFile}"
          ++ s3.loadCredential cfg.s3;
        # Building NixOS systems takes long; the next timer tick waits.
        TimeoutStartSec = "6h";
        Nice = 10;
        IOSchedulingClass = "idle";
        # Looser than nix/lib/hardening.nix on purpose: the job runs git, ssh and
        # `nix build` of whole systems, so no syscall filter or namespace limits.
        NoNewPrivileges = true;
        ProtectSystem = "full";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectControlGroups = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        CapabilityBoundingSet = "";
      } // lib.optionalAttrs (cfg.s3.environmentFile != null) { EnvironmentFile = cfg.s3.environmentFile; };
    };

    systemd.timers.nix-lan-cache-build = {
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = cfg.dates;
        Persistent = true;
        RandomizedDelaySec = "15min";
      };
    };
  };
}
