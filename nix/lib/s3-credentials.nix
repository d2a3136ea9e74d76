# S3 buckets in the modules: the URL type, and credentials for a service that
# never pass through the Nix store: an environment file read by systemd
# (AWS_ACCESS_KEY_ID=…, AWS_SECRET_ACCESS_KEY=…, AWS_SESSION_TOKEN=…), or an
# AWS shared credentials file handed over with LoadCredential (the service
# reads it from $CREDENTIALS_DIRECTORY through AWS_SHARED_CREDENTIALS_FILE).
# See docs/lab.md.
{ lib }:
let
  inherit (lib) mkOption types;
in
rec {
  # A secret: an absolute path read at run time, never copied into the store.
  secretPath = types.addCheck types.str
    (s: lib.hasPrefix "/" s && !(lib.hasPrefix "${builtins.storeDir}/" s)) // {
      name = "secretPath";
      description = "absolute path outside the Nix store, given as a string (a secret must not be copied into the store)";
    };

  # Nix's syntax (src/s3/url.ts checks the rest when the service starts).
  s3UrlType = types.strMatching "s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\\?[^ ]*)?" // {
    description = "S3 bucket URL s3://BUCKET?endpoint=URL&region=REGION (Nix's syntax)";
  };

  options = what: {
    environmentFile = mkOption {
      type = types.nullOr secretPath;
      default = null;
      example = "/run/secrets/nix-cache-s3.env";
      description = ''
        Environment file with the S3 credentials ${what} uses
        (`AWS_ACCESS_KEY_ID=…`, `AWS_SECRET_ACCESS_KEY=…`, optionally
        `AWS_SESSION_TOKEN=…`), read by systemd (EnvironmentFile=); it stays
        outside the Nix store.
      '';
    };
    credentialsFile = mkOption {
      type = types.nullOr secretPath;
      default = null;
      example = "/run/secrets/aws-credentials";
      description = ''
        AWS shared credentials file (the `~/.aws/credentials` format) for ${what},
        passed to the service with LoadCredential and read through
        AWS_SHARED_CREDENTIALS_FILE; it stays outside the Nix store.
      '';
    };
    profile = mkOption {
      type = types.nullOr (types.strMatching "[A-Za-z0-9_.+=@-]+");
      default = null;
      description = "Profile of `credentialsFile` to use (AWS_PROFILE); null: `default`, or `profile=` in the bucket URL.";
    };
  };

  # What a unit needs for these credentials; LoadCredential as a list to add to the unit's own.
  loadCredential = c: lib.optional (c.credentialsFile != null) "aws-credentials:${c.credentialsFile}";
  environment = c:
    lib.optionalAttrs (c.credentialsFile != null) { AWS_SHARED_CREDENTIALS_FILE = "%d/aws-credentials"; }
    // lib.optionalAttrs (c.profile != null) { AWS_PROFILE = c.profile; };
  serviceConfig = c:
    lib.optionalAttrs (c.environmentFile != null) { EnvironmentFile = c.environmentFile; }
    // lib.optionalAttrs (loadCredential c != [ ]) { LoadCredential = loadCredential c; };
}
