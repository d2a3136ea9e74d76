import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { delimiter, dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDir, tempDir } from '../helpers/nix.js';
import { run, runOk } from '../helpers/proc.js';
import { repoRoot } from '../nix/nix-eval.js';

// `.ci/run` on a machine whose `node` is not Node 24 (Debian 12's, or none):
// it fetches the official binary with `npm pack node-linux-<arch>@24.21.0`.
// The registry here is a loopback stand-in serving that package's layout
// (package/bin/node); its `node` runs the Node these tests run on.
const NODE_VERSION = '24.21.0';
const PKG = `node-linux-${process.arch === 'arm64' ? 'arm64' : 'x64'}`;

interface Registry {
  url: string;
  requests: string[];
  close(): Promise<void>;
}

async function startRegistry(tgz: Buffer, integrityOf: Buffer = tgz): Promise<Registry> {
  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    requests.push(req.url!);
    const base = `http://127.0.0.1:${(server.address() as any).port}`;
    if (req.url === `/${PKG}`) {
      const version = {
        name: PKG,
        version: NODE_VERSION,
        bin: { node: 'bin/node' },
        dist: {
          tarball: `${base}/${PKG}/-/${PKG}-${NODE_VERSION}.tgz`,
          integrity: `sha512-${createHash('sha512').update(integrityOf).digest('base64')}`,
          shasum: createHash('sha1').update(integrityOf).digest('hex'),
        },
      };
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ name: PKG, 'dist-tags': { latest: NODE_VERSION }, versions: { [NODE_VERSION]: version } }));
    } else if (req.url === `/${PKG}/-/${PKG}-${NODE_VERSION}.tgz`) {
      res.setHeader('content-type', 'application/octet-stream');
      res.end(tgz);
    } else {
      res.statusCode = 404;
      res.end('{}');
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as any).port}/`,
    requests,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** Which directory on this PATH holds `npm`. */
function npmDir(): string {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) if (existsSync(join(dir, 'npm'))) return dir;
  throw new Error('npm is not on PATH');
}

describe('.ci/run on a machine without Node 24', () => {
  let dir: string;
  let tgz: Buffer;
  let oldNodeBin: string;

  beforeAll(async () => {
    dir = await tempDir('i12-ci-node');
    // The package as the registry has it: package/package.json and package/bin/node.
    const pkg = join(dir, 'pkg/package');
    await mkdir(join(pkg, 'bin'), { recursive: true });
    await writeFile(join(pkg, 'package.json'), JSON.stringify({ name: PKG, version: NODE_VERSION, bin: { node: 'bin/node' } }));
    await writeFile(join(pkg, 'bin/node'), `#!/bin/sh\nexec ${process.execPath} "$@"\n`);
    await chmod(join(pkg, 'bin/node'), 0o755);
    await runOk('tar', ['-czf', join(dir, 'node.tgz'), '-C', join(dir, 'pkg'), 'package']);
    tgz = await readFile(join(dir, 'node.tgz'));
    // The machine's own node: an older one (npm still runs on it).
    oldNodeBin = join(dir, 'old-node-bin');
    await mkdir(oldNodeBin);
    await writeFile(join(oldNodeBin, 'node'), `#!/bin/sh\n[ "$1" = --version ] && { echo v20.19.5; exit 0; }\nexec ${process.execPath} "$@"\n`);
    await chmod(join(oldNodeBin, 'node'), 0o755);
  });
  afterAll(async () => {
    await removeDir(dir);
  });

  const ciRun = (registry: string, prefix: string, firstOnPath = oldNodeBin) =>
    run('bash', [join(repoRoot, '.ci/run'), '--node-only'], {
      env: {
        PATH: [firstOnPath, npmDir(), '/usr/sbin', '/usr/bin', '/sbin', '/bin'].join(delimiter),
        HOME: dir,
        NLC_NODE_PREFIX: prefix,
        npm_config_registry: registry,
        npm_config_cache: join(dir, 'npm-cache'),
        npm_config_userconfig: join(dir, 'no-npmrc'),
        npm_config_update_notifier: 'false',
        // A refused download fails at once rather than after npm's back-off.
        npm_config_fetch_retries: '0',
      },
      timeoutMs: 60_000,
    });

  it('installs Node 24 from the npm package node-linux-<arch>, puts it first on PATH and prints the version; a second run reuses it', async () => {
    const registry = await startRegistry(tgz);
    try {
      const prefix = join(dir, 'opt/node');
      const first = await ciRun(registry.url, prefix);
      expect(first.code, first.stderr).toBe(0);
      expect(first.stdout).toContain(`Installing Node ${NODE_VERSION} (npm package ${PKG}) into ${prefix}`);
      expect(first.stdout).toMatch(new RegExp(`^Node v24\\.\\d+\\.\\d+ \\(${prefix}/bin/node\\), npm \\d+\\.`, 'm'));
      expect(existsSync(join(prefix, 'bin/node'))).toBe(true);
      // npm reads the package's metadata, then fetches the tarball once.
      expect(new Set(registry.requests)).toEqual(new Set([`/${PKG}`, `/${PKG}/-/${PKG}-${NODE_VERSION}.tgz`]));
      expect(registry.requests.filter((r) => r.endsWith('.tgz'))).toHaveLength(1);

      registry.requests.length = 0;
      const second = await ciRun(registry.url, prefix);
      expect(second.code, second.stderr).toBe(0);
      expect(second.stdout).not.toContain('Installing');
      expect(second.stdout).toContain(`(${prefix}/bin/node)`);
      expect(registry.requests).toEqual([]);
    } finally {
      await registry.close();
    }
  });

  it('a download that does not match the registry\'s integrity hash installs nothing and fails', async () => {
    const registry = await startRegistry(tgz, Buffer.from('something else'));
    try {
      const prefix = join(dir, 'opt/corrupt');
      const res = await ciRun(registry.url, prefix);
      expect(res.code).not.toBe(0);
      expect(res.stderr).toMatch(/integrity|EINTEGRITY/i);
      expect(existsSync(join(prefix, 'bin/node'))).toBe(false);
    } finally {
      await registry.close();
    }
  });

  it('uses the Node 24 already on PATH without asking the registry', async () => {
    const registry = await startRegistry(tgz);
    try {
      const res = await ciRun(registry.url, join(dir, 'opt/unused'), dirname(process.execPath));
      expect(res.code, res.stderr).toBe(0);
      expect(res.stdout).toContain(`Node ${process.version} (${process.execPath})`);
      expect(registry.requests).toEqual([]);
    } finally {
      await registry.close();
    }
  });
});
