# The nix-lan-cache CLI, built from this repository with nixpkgs' buildNpmPackage.
# Dependencies come straight from package-lock.json (importNpmLock): no
# npmDepsHash to keep in sync.
{ lib
, buildNpmPackage
, importNpmLock
, nodejs_20
}:
let
  root = ../.;
  packageJson = lib.importJSON (root + "/package.json");
  npmLock = import ./lib/npm-lock.nix { inherit lib; };
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
  nodejs = nodejs_20;

  npmDeps = importNpmLock {
    npmRoot = src;
    packageLock = npmLock.addResolved (lib.importJSON (root + "/package-lock.json"));
  };
  npmConfigHook = importNpmLock.npmConfigHook;

  # `npm run build` (tsc) runs in the build phase; `prepare` would run it again
  # while packing.
  npmPackFlags = [ "--ignore-scripts" ];

  meta = {
    description = packageJson.description;
    license = lib.licenses.mit;
    mainProgram = "nix-lan-cache";
    platforms = lib.platforms.unix;
  };
}
