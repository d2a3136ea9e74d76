# importNpmLock fetches every package from its `resolved` URL. A lockfile
# written with npm's `omit-lockfile-registry-resolved` setting (this repo's is)
# has only `version` and `integrity`, so put the registry's tarball URL back:
#   https://registry.npmjs.org/<name>/-/<name without scope>-<version>.tgz
# The `integrity` hash stays what pins the content.
{ lib }:
let
  registry = "https://registry.npmjs.org";
  # "node_modules/a/node_modules/@s/b" -> "@s/b"; an npm alias records its real name.
  packageName = key: module: module.name or (lib.last (lib.splitString "node_modules/" key));
  tarballUrl = name: version: "${registry}/${name}/-/${lib.last (lib.splitString "/" name)}-${version}.tgz";
  needsUrl = key: module:
    key != "" && !(module ? resolved) && !(module.link or false) && module ? version && module ? integrity;
in
{
  inherit tarballUrl;
  addResolved = lock: lock // {
    packages = lib.mapAttrs
      (key: module:
        if needsUrl key module
        then module // { resolved = tarballUrl (packageName key module) module.version; }
        else module)
      lock.packages;
  };
}
