import { copyFile, mkdir, readdir, readFile, writeFile, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nixEnv, removeDir, tempDir } from '../helpers/nix.js';
import { freePort } from '../helpers/ports.js';
import { run, runOk, startProcess, stopAll, stopProcess } from '../helpers/proc.js';
import { PI_KEY, evalExpr, repoRoot } from './nix-eval.js';

// Debian's systemd package: `systemd-analyze verify` works without systemd as PID 1.
const machine = `{
  services.nix-lan-cache = { enable = true; trustedPublicKeys = [ "${PI_KEY}" ]; };
  services.nix-lan-cache.pi = { enable = true; keyName = "pi.lan-1"; announce.method = "nix-lan-cache"; announce.priority = 20; };
  services.nix-lan-cache.buildServer = {
    enable = true; flake = "/srv/flake"; machines = [ "a" "b" ];
    target = "ssh://nix-cache@pi/var/lib/nix-cache"; keyFile = "/var/lib/secrets/k.sk"; sshKeyFile = "/var/lib/secrets/ssh";
  };
}`;

/** nix-build the rendered units (this also builds every executable they point at). */
async function buildUnits(expr: string): Promise<string> {
  return (await runOk('nix-build', ['--no-out-link', '-E', expr], { env: nixEnv(), timeoutMs: 120_000 })).trim();
}

async function verify(files: string[], user = false, runtimeDir?: string) {
  return run('systemd-analyze', ['verify', '--man=no', ...(user ? ['--user'] : []), ...files], {
    env: { ...process.env, ...(runtimeDir ? { XDG_RUNTIME_DIR: runtimeDir } : {}) },
  });
}

/** The `Key=value` lines of one `[Section]` of a unit file. */
function section(unit: string, name: string): string[] {
  let current = '';
  const lines: string[] = [];
  for (const line of unit.split('\n')) {
    const header = /^\[(.+)\]$/.exec(line);
    if (header) current = header[1]!;
    else if (current === name && /^\w[\w-]*=/.test(line)) lines.push(line);
  }
  return lines;
}

/** The proxy comes back whatever ends it, however often: Nix has no other substituter. */
function expectAlwaysRestarts(unit: string) {
  expect(section(unit, 'Service')).toContain('Restart=always');
  // Back within a second if it ever dies (issue 26).
  expect(section(unit, 'Service')).toContain('RestartSec=500ms');
  expect(section(unit, 'Unit')).toContain('StartLimitIntervalSec=0');
}

let tmp: string;
beforeAll(async () => {
  tmp = await tempDir('units');
});
afterAll(async () => {
  await stopAll();
  await removeDir(tmp);
});

describe('systemd units from the NixOS modules', () => {
  it('pass systemd-analyze verify with no complaint', async () => {
    const dir = await buildUnits(evalExpr({ modules: ['client', 'pi', 'build-server'], machine }, 'unitDir'));
    const files = (await readdir(dir)).sort();
    expect(files).toEqual([
      'nix-lan-cache-announce.service',
      'nix-lan-cache-build.service',
      'nix-lan-cache-build.timer',
      'nix-lan-cache-gc.service',
      'nix-lan-cache-gc.timer',
      'nix-lan-cache.service',
    ]);
    const res = await verify(files.map((f) => join(dir, f)));
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    expectAlwaysRestarts(await readFile(join(dir, 'nix-lan-cache.service'), 'utf8'));

    // The checker is not blind: the same unit with one typo and one bad value is reported.
    const bad = join(tmp, 'nix-lan-cache.service');
    const text = await readFile(join(dir, 'nix-lan-cache.service'), 'utf8');
    await writeFile(bad, text.replace('ProtectSystem=strict', 'ProtectSystm=strict').replace('NoNewPrivileges=true', 'NoNewPrivileges=maybe'));
    const res2 = await verify([bad]);
    expect(res2.stderr).toMatch(/Unknown key 'ProtectSystm'/);
    expect(res2.stderr).toMatch(/Failed to parse boolean value.*maybe/);
  });

  it('the build script has valid bash syntax and its PATH has ssh, git and nix-lan-cache', async () => {
    const dir = await buildUnits(evalExpr({ modules: ['client', 'pi', 'build-server'], machine }, 'unitDir'));
    const unit = await readFile(join(dir, 'nix-lan-cache-build.service'), 'utf8');
    const exec = /^ExecStart=(\S+)$/m.exec(unit)![1]!;
    await runOk('bash', ['-n', exec]);
    const script = await readFile(exec, 'utf8');
    const path = /^export PATH="([^"]*):\$PATH"$/m.exec(script)![1]!.split(':');
    const has = async (tool: string) => (await Promise.all(path.map((p) => run('test', ['-x', join(p, tool)])))).some((r) => r.code === 0);
    for (const tool of ['ssh', 'git', 'nix', 'nix-lan-cache', 'sed']) expect(await has(tool), tool).toBe(true);
    // The ssh wrapper uses the credential and never prompts.
    const sshWrapper = path.find((p) => p.endsWith('-ssh/bin'))!;
    const wrapper = await readFile(join(sshWrapper, 'ssh'), 'utf8');
    expect(wrapper).toContain('-i "$CREDENTIALS_DIRECTORY/ssh-key" -o IdentitiesOnly=yes');
    expect(wrapper).toContain('-o BatchMode=yes "$@"');
  });
});

describe('user units', () => {
  it('nix/user/nix-lan-cache.service and the home-manager unit pass systemd-analyze verify --user', async () => {
    const runtime = join(tmp, 'runtime');
    await mkdir(runtime, { mode: 0o700 });
    const hmDir = await buildUnits(evalExpr({ modules: ['home-manager'], host: 'home-manager', machine: '{ services.nix-lan-cache.enable = true; }' }, 'unitDir'));
    const res = await verify([join(repoRoot, 'nix/user/nix-lan-cache.service'), join(hmDir, 'nix-lan-cache.service')], true, runtime);
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    expectAlwaysRestarts(await readFile(join(repoRoot, 'nix/user/nix-lan-cache.service'), 'utf8'));
    expectAlwaysRestarts(await readFile(join(hmDir, 'nix-lan-cache.service'), 'utf8'));
  });

  // No user manager can run here (PID 1 is not systemd; `systemd --user` exits 1 at once),
  // so run each unit's ExecStart as the manager would: specifiers expanded, the unit's
  // environment, stopped with SIGTERM. Loopback only: mDNS off, upstream a closed local port.
  async function startAndStop(exec: string, env: NodeJS.ProcessEnv, port: number) {
    const [cmd, ...args] = exec.split(' ');
    const child = startProcess(cmd!, args, { env });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    let body = '';
    for (let i = 0; i < 100 && !body; i++) {
      await new Promise((r) => setTimeout(r, 100));
      body = await fetch(`http://127.0.0.1:${port}/nix-cache-info`).then((r) => (r.ok ? r.text() : ''), () => '');
      if (child.exitCode !== null) throw new Error(`exited ${child.exitCode}: ${stderr}`);
    }
    expect(body).toMatch(/^StoreDir: \/nix\/store$/m);
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    await stopProcess(child, 'SIGTERM', 5000);
    expect(await exited).toBe(0);
  }

  it("the home-manager unit's ExecStart starts the proxy with the generated config and stops on SIGTERM", async () => {
    const port = await freePort();
    const dir = await buildUnits(
      evalExpr(
        {
          modules: ['home-manager'],
          host: 'home-manager',
          machine: `{ services.nix-lan-cache = { enable = true; listen = "127.0.0.1:${port}"; mdns = false; upstreams = [ "http://127.0.0.1:1" ]; trustedPublicKeys = [ "${PI_KEY}" ]; }; }`,
        },
        'unitDir',
      ),
    );
    const unit = await readFile(join(dir, 'nix-lan-cache.service'), 'utf8');
    const exec = /^ExecStart=(.*)$/m.exec(unit)![1]!.replaceAll('%S', join(tmp, 'state'));
    await startAndStop(exec, { ...process.env }, port);
  });

  it("nix/user/nix-lan-cache.service's ExecStart starts the CLI installed in ~/.nix-profile", async () => {
    const port = await freePort();
    const home = join(tmp, 'home');
    const bin = join(home, '.nix-profile/bin');
    await mkdir(bin, { recursive: true });
    await writeFile(join(bin, 'nix-lan-cache'), `#!/bin/sh\nexec ${process.execPath} ${repoRoot}/dist/cli/main.js "$@"\n`);
    await chmod(join(bin, 'nix-lan-cache'), 0o755);
    await mkdir(join(home, '.config/nix-lan-cache'), { recursive: true });
    await writeFile(join(home, '.config/nix-lan-cache/config.json'), JSON.stringify({ listen: `127.0.0.1:${port}`, mdns: false, upstream: ['http://127.0.0.1:1'], trustedPublicKeys: [PI_KEY] }));
    const unit = await readFile(join(repoRoot, 'nix/user/nix-lan-cache.service'), 'utf8');
    const expand = (s: string) => s.replaceAll('%h', home).replaceAll('%E', join(home, '.config')).replaceAll('%S', join(home, '.local/state'));
    const exec = expand(/^ExecStart=(.*)$/m.exec(unit)![1]!);
    const env: NodeJS.ProcessEnv = {};
    for (const m of unit.matchAll(/^Environment=(\w+)=(.*)$/gm)) env[m[1]!] = expand(m[2]!);
    expect(env.PATH!.split(':')[0]).toBe(bin);
    await startAndStop(exec, env, port);
  });
});
