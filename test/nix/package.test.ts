import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { evalFails, evalOk, nixpkgsLib, repoRoot } from './nix-eval.js';

/** The real nix/package.nix, called with the checking stand-ins of test/nix/fixtures/package-stand-ins.nix. */
const packageExpr = (nodeVersion: string, attrs: string) => `let
  lib = import ${nixpkgsLib};
  args = import ${repoRoot}/test/nix/fixtures/package-stand-ins.nix { inherit lib; nodeVersion = "${nodeVersion}"; };
  pkg = import ${repoRoot}/nix/package.nix (builtins.intersectAttrs (builtins.functionArgs (import ${repoRoot}/nix/package.nix)) args);
in ${attrs}`;

describe('nix/package.nix (evaluated with a buildNpmPackage stand-in that checks its arguments)', () => {
  it('builds on Node 24 from the lockfile, installs the nix-lan-cache command with xz, bzip2 and zstd on its PATH', async () => {
    const p = await evalOk(
      packageExpr(
        '24.11.1',
        `{
          inherit (pkg) pname version npmPackFlags postInstall installedBins;
          nodejs = pkg.nodejs.name;
          mainProgram = pkg.meta.mainProgram;
          nativeBuildInputs = map (p: p.name) pkg.nativeBuildInputs;
          src = "\${pkg.src}";
          npmRoot = "\${pkg.npmDeps.npmRoot}";
          packages = pkg.npmDeps.packageLock.packages;
        }`,
      ),
    );
    const pj = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8'));
    expect(p).toMatchObject({ pname: 'nix-lan-cache', version: pj.version, nodejs: 'nodejs-24.11.1', npmPackFlags: ['--ignore-scripts'] });

    // The command npm's install hook puts in $out/bin, and the one `lib.getExe` runs.
    expect(p.installedBins).toEqual({ 'nix-lan-cache': '/stand-in/nodejs-24.11.1/bin/node $out/lib/node_modules/nix-lan-cache/dist/cli/main.js' });
    expect(p.mainProgram).toBe('nix-lan-cache');
    expect(existsSync(join(repoRoot, 'src/cli/main.ts'))).toBe(true);
    // …wrapped so that `serve` finds the decompressors it spawns.
    expect(p.nativeBuildInputs).toContain('make-wrapper-hook');
    expect(p.postInstall.trim()).toBe('wrapProgram $out/bin/nix-lan-cache --prefix PATH : /stand-in/xz-bin/bin:/stand-in/bzip2-bin/bin:/stand-in/zstd-bin/bin');

    // Only what the build needs is in the source.
    expect(p.npmRoot).toBe(p.src);
    const top = readdirSync(p.src).sort();
    expect(top).toEqual(expect.arrayContaining(['package.json', 'package-lock.json', 'tsconfig.json', 'src']));
    expect(top).not.toContain('node_modules');
    expect(top).not.toContain('test');

    // npmDeps: every entry of the lockfile, with the registry URL importNpmLock fetches it from.
    const lock = JSON.parse(readFileSync(join(repoRoot, 'package-lock.json'), 'utf8'));
    const entries = Object.entries<any>(p.packages).filter(([k]) => k !== '');
    expect(entries.length).toBe(Object.keys(lock.packages).length - 1);
    for (const [key, mod] of entries) {
      const name = key.slice(key.lastIndexOf('node_modules/') + 'node_modules/'.length);
      const base = name.split('/').pop();
      expect(mod.resolved, key).toBe(`https://registry.npmjs.org/${name}/-/${base}-${mod.version}.tgz`);
      expect(mod.integrity, key).toBe(lock.packages[key].integrity);
    }
  });

  it('the stand-in is not blind: a Node older than package.json allows is refused', async () => {
    const err = await evalFails(packageExpr('20.19.0', 'pkg.pname'));
    expect(err).toMatch(/buildNpmPackage stand-in: nodejs 20\.19\.0 does not satisfy package\.json's engines\.node ">=24"/);
  });

  it("package.json's engines and @types/node say Node 24", () => {
    const pj = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8'));
    expect(pj.engines.node).toBe('>=24');
    expect(pj.devDependencies['@types/node']).toMatch(/^\^24\./);
  });
});
