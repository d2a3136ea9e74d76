# The nix-lan-cache CLI, built from this repository with nixpkgs' buildNpmPackage
# on Node 24 LTS. Dependencies come straight from package-lock.json
# (importNpmLock): no npmDepsHash to keep in sync.
{ lib
, buildNpmPackage
, importNpmLock
, nodejs_24
, makeWrapper
, xz
, bzip2
, zstd
}:
let
  root = ../.;
  packageJson = lib.importJSON (root + "/package.json");
  npmLock = import ./lib/npm-lock.nix { inherit lib; };
  # The command package.json installs (`bin`): npm's install hook wraps it with node.
  binName = lib.head (lib.attrNames packageJson.bin);
  # The proxy may spawn these to decompress NARs (xz -dc, bzip2 -dc, zstd -dc).
  runtimeTools = [ xz bzip2 zstd ];
  # Only what the build needs: editing tests or docs elsewhere does not rebuild.
  sourceTop = [ "package.json" "package-lock.json" "tsconfig.json" "src" "docs" "nix" ];
  src = lib.cleanSourceWith {
    name = "nix-lan-cache-source";
    src = root;
    filter = path: _type:
      lib.elem (lib.head (lib.splitString "/" (lib.removePrefix "${toString root}/" (toString path)))) sourceTop;
  };
in
buildNpmPackage {
  pname = packageJson.name;
  inherit (packageJson) version;
  inherit src;
  nodejs = nodejs_24;

  npmDeps = importNpmLock {
    npmRoot = src;
    packageLock = npmLock.addResolved (lib.importJSON (root + "/package-lock.json"));
  };
  npmConfigHook = importNpmLock.npmConfigHook;

  # `npm run build` (tsc) runs in the build phase; `prepare` would run it again
  # while packing.
  npmPackFlags = [ "--ignore-scripts" ];

  nativeBuildInputs = [ makeWrapper ];
  # MALLOC_ARENA_MAX: glibc gives every thread that mallocs its own arena and
  # keeps what it freed: ~20 MiB of peak RSS for nothing (docs/benchmarks.md,
  # case 11b). Set only if unset. --max-semi-space-size=4: V8's young
  # generation grows to 16 MiB semi-spaces under a closure's burst of
  # requests; 4 MiB took ~13 MiB off the peak at the same speed (case 11b).
  # Put first, so a NODE_OPTIONS of the user's own comes after and wins.
  postInstall = ''
    wrapProgram $out/bin/${binName} --prefix PATH : ${lib.makeBinPath runtimeTools} --set-default MALLOC_ARENA_MAX 2 --prefix NODE_OPTIONS ' ' --max-semi-space-size=4
  '';

  meta = {
    description = packageJson.description;
    license = lib.licenses.mit;
    mainProgram = binName;
    platforms = lib.platforms.unix;
  };
}
