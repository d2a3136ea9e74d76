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
  # The decompressors on PATH. The services' memory settings (glibc's arenas
  # and mmap threshold, V8's young generation) are set by the CLI itself
  # however it is started (src/cli/memory.ts), not here.
  postInstall = ''
    wrapProgram $out/bin/${binName} --prefix PATH : ${lib.makeBinPath runtimeTools}
  '';

  meta = {
    description = packageJson.description;
    license = lib.licenses.mit;
    mainProgram = binName;
    platforms = lib.platforms.unix;
  };
}
