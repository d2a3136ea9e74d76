import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Nginx } from '../helpers/nginx.js';
import { freePort } from '../helpers/ports.js';
import { run, stopAll } from '../helpers/proc.js';
import { CLI, startProxy, type ProxyProcess } from '../helpers/proxy.js';
import { generateKey, removeDir, tempDir, type CacheKey } from '../helpers/nix.js';
import type { Finding } from '../../src/doctor/finding.js';

const NIXOS_KEY = 'cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=';

describe('doctor, against real Nix reading a test nix.conf (NIX_CONF_DIR)', () => {
  let dir: string;
  let pi: Nginx;
  let upstream: Nginx;
  let piKey: CacheKey;
  let upKey: CacheKey;
  let proxy: ProxyProcess;

  beforeAll(async () => {
    dir = await tempDir('doctor');
    for (const d of ['pi-root', 'pi-nginx', 'up-root', 'up-nginx']) await mkdir(join(dir, d));
    await writeFile(join(dir, 'pi-root', 'nix-cache-info'), 'StoreDir: /nix/store\n');
    await writeFile(join(dir, 'up-root', 'nix-cache-info'), 'StoreDir: /nix/store\n');
    pi = await Nginx.start({ root: join(dir, 'pi-root'), workDir: join(dir, 'pi-nginx') });
    upstream = await Nginx.start({ root: join(dir, 'up-root'), workDir: join(dir, 'up-nginx') });
    piKey = await generateKey(dir, 'pi.lan-1');
    upKey = await generateKey(dir, 'upstream-1');
    proxy = await startProxy(['--no-mdns', '--state-dir', join(dir, 'state'), '--lan', pi.url, '--upstream', upstream.url, '--trusted-public-key', piKey.publicKey, '--trusted-public-key', upKey.publicKey]);
  });
  afterAll(async () => {
    await proxy?.stop();
    await pi?.stop();
    await upstream?.stop();
    await stopAll();
    if (dir) await removeDir(dir);
  });

  /** Runs `nix-lan-cache doctor --json` with Nix reading only `nixConf` (no NIX_CONFIG from the test env). */
  async function doctor(nixConf: string, args: string[]): Promise<{ code: number | null; findings: Finding[]; text: string }> {
    const confDir = await tempDir('doctor-conf');
    try {
      await writeFile(join(confDir, 'nix.conf'), nixConf);
      const env: NodeJS.ProcessEnv = { ...process.env, NIX_CONF_DIR: confDir, NIX_USER_CONF_FILES: join(confDir, 'none.conf'), XDG_CONFIG_HOME: confDir };
      delete env.NIX_CONFIG;
      const json = await run(process.execPath, [CLI, 'doctor', '--json', ...args], { env });
      const text = await run(process.execPath, [CLI, 'doctor', ...args], { env });
      expect(text.code).toBe(json.code);
      return { code: json.code, findings: (JSON.parse(json.stdout) as { findings: Finding[] }).findings, text: text.stdout };
    } finally {
      await removeDir(confDir);
    }
  }
  const goodConf = () => `substituters = ${proxy.url}\ntrusted-public-keys = ${NIXOS_KEY} ${piKey.publicKey} ${upKey.publicKey}\nnarinfo-cache-negative-ttl = 30\n`;
  const ids = (f: Finding[], level?: Finding['level']) => f.filter((x) => !level || x.level === level).map((x) => x.id);

  it('a good setup: no problems, exit 0, both origins reachable', async () => {
    const r = await doctor(goodConf(), ['--url', proxy.url]);
    expect(ids(r.findings, 'fail'), r.text).toEqual([]);
    expect(ids(r.findings, 'warn'), r.text).toEqual([]);
    expect(r.code).toBe(0);
    expect(ids(r.findings)).toEqual(expect.arrayContaining(['proxy-running', 'nix-config', 'substituter-ok', 'key-trusted', 'negative-ttl-ok']));
    expect(r.findings.filter((f) => f.id === 'origin-reachable')).toHaveLength(2);
    expect(r.text).toContain('all good');
  });

  it('the nix.conf lines `serve` prints at start are a setup doctor finds nothing wrong with', async () => {
    const printed = proxy.stdout();
    expect(printed).toMatch(/^substituters = /m);
    const r = await doctor(printed, ['--url', proxy.url]);
    expect(ids(r.findings, 'fail'), r.text).toEqual([]);
    expect(ids(r.findings, 'warn'), r.text).toEqual([]);
    expect(r.code).toBe(0);
  });

  it('flags a nix.conf that lists the Pi directly, with the fix', async () => {
    const r = await doctor(`substituters = ${proxy.url} ${pi.url}\ntrusted-public-keys = ${NIXOS_KEY} ${piKey.publicKey} ${upKey.publicKey}\nnarinfo-cache-negative-ttl = 30\n`, ['--url', proxy.url]);
    expect(r.code).toBe(1);
    const f = r.findings.find((x) => x.id === 'substituter-lan-direct')!;
    expect(f.level).toBe('fail');
    expect(f.message).toContain(pi.url);
    expect(f.fix).toContain(`substituters = ${proxy.url}`);
    expect(r.text).toMatch(/\[FAIL\] nix.conf lists the LAN cache .* directly/);
    expect(r.text).toContain(`fix: remove ${pi.url}`);
  });

  it('flags a missing trusted key (the Pi key the proxy trusts), with the line to put in nix.conf', async () => {
    const r = await doctor(`substituters = ${proxy.url}\ntrusted-public-keys = ${NIXOS_KEY} ${upKey.publicKey}\nnarinfo-cache-negative-ttl = 30\n`, ['--url', proxy.url]);
    expect(r.code).toBe(1);
    const f = r.findings.filter((x) => x.id === 'key-missing');
    expect(f).toHaveLength(1);
    expect(f[0]!.message).toContain('pi.lan-1');
    expect(f[0]!.fix).toBe(`add it to nix.conf: trusted-public-keys = ${NIXOS_KEY} ${upKey.publicKey} ${piKey.publicKey}`);
  });

  it('flags a proxy that is not running, and still checks nix.conf against --lan/--trusted-public-key', async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const r = await doctor(`substituters = ${url} ${pi.url}\ntrusted-public-keys = ${NIXOS_KEY}\n`, ['--url', url, '--lan', pi.url, '--trusted-public-key', piKey.publicKey]);
    expect(r.code).toBe(1);
    const f = r.findings.find((x) => x.id === 'proxy-not-running')!;
    expect(f.level).toBe('fail');
    expect(f.message).toContain(url);
    expect(f.fix).toContain('nix-lan-cache serve');
    expect(ids(r.findings, 'fail')).toEqual(expect.arrayContaining(['proxy-not-running', 'substituter-lan-direct', 'key-missing']));
    // Nix's default negative TTL (3600 s) is left as is in this nix.conf.
    expect(r.findings.find((x) => x.id === 'negative-ttl-long')?.fix).toBe('in nix.conf: narinfo-cache-negative-ttl = 60');
  });

  it('reports a LAN cache that stopped answering, as a warning', async () => {
    await pi.stop();
    try {
      const r = await doctor(goodConf(), ['--url', proxy.url]);
      const f = r.findings.find((x) => x.id === 'origin-unreachable')!;
      expect(f.level).toBe('warn');
      expect(f.message).toContain(pi.url);
      expect(r.code).toBe(0);
      const strict = await doctor(goodConf(), ['--url', proxy.url, '--strict']);
      expect(strict.code).toBe(1);
    } finally {
      await pi.start();
    }
  });
});
