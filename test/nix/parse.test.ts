import { readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { nixEnv } from '../helpers/nix.js';
import { run } from '../helpers/proc.js';
import { repoRoot } from './nix-eval.js';

function nixFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    if (e.name === 'node_modules' || e.name === '.git' || e.name === 'dist') return [];
    const p = join(dir, e.name);
    return e.isDirectory() ? nixFiles(p) : e.name.endsWith('.nix') ? [p] : [];
  });
}

describe('every .nix file in the repository', () => {
  const files = nixFiles(repoRoot).map((f) => relative(repoRoot, f)).sort();

  it('includes the package, the modules and the flake', () => {
    expect(files).toEqual(
      expect.arrayContaining([
        'flake.nix',
        'nix/package.nix',
        'nix/modules/client.nix',
        'nix/modules/pi.nix',
        'nix/modules/build-server.nix',
        'nix/modules/home-manager.nix',
      ]),
    );
  });

  it.each(files)('%s parses (nix-instantiate --parse)', async (file) => {
    const res = await run('nix-instantiate', ['--parse', join(repoRoot, file)], { env: nixEnv() });
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
  });
});
