import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { avahiBrowse, killBrowseDaemons } from '../helpers/avahi.js';
import { NetLab } from '../helpers/netns.js';
import { removeDir, tempDir } from '../helpers/nix.js';
import { collectJsonLines, startProcess, stopAll, stopProcess } from '../helpers/proc.js';
import { CLI } from '../helpers/proxy.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** Starts a process and resolves once a JSON log line with `event` appears on stderr. */
async function startLogged(cmd: string, args: string[], event: string, timeoutMs = 10_000): Promise<{ child: ChildProcess; logs: Array<Record<string, unknown>> }> {
  const child = startProcess(cmd, args, { cwd: ROOT, env: { ...process.env, NIX_LAN_CACHE_LOG_FORMAT: 'json' } });
  const logs: Array<Record<string, unknown>> = [];
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} after ${timeoutMs} ms: ${JSON.stringify(logs)}`)), timeoutMs);
    collectJsonLines(child.stderr!, logs, (entry) => {
      if (entry.event === event) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`exited with ${code} before ${event}: ${JSON.stringify(logs)}`));
    });
  });
  return { child, logs };
}

// mdns-js's advertiser, as the design card would have had `announce` use it.
const MDNS_JS_ADVERTISER = `
const mdns = require('mdns-js');
const ad = mdns.createAdvertisement(mdns.tcp('nix-cache'), 8081, { name: 'mdnsjs-pi', host: 'mdnsjs-host', txt: { path: '/', key: 'pi.lan-1', priority: '30' } });
ad.start();
console.error(JSON.stringify({ event: 'announcing' }));
process.on('SIGTERM', () => process.exit(0));
`;

describe('announce: what Debian avahi-browse sees in another namespace', () => {
  let lab: NetLab;
  let dir: string;
  const daemonPids: number[] = [];

  beforeAll(async () => {
    dir = await tempDir('announce');
    lab = await NetLab.create('ann', 41, ['pi', 'laptop']);
  });
  afterAll(async () => {
    await stopAll();
    killBrowseDaemons(daemonPids);
    await lab?.destroy();
    if (dir) await removeDir(dir);
  });

  it('lists what `announce` publishes with TXT values intact, and shows that mdns-js splits dotted TXT values', async () => {
    const pi = lab.address('pi');
    const announce = await startLogged(
      'ip',
      [...lab.exec('pi').slice(1), process.execPath, CLI, 'announce', '--port', '8080', '--path', '/cache/', '--key-name', 'pi.lan-1', '--priority', '30', '--name', 'bonjour pi', '--host', 'bonjour-pi.local', '--interface', pi],
      'announcing',
    );
    const mdnsjs = await startLogged('ip', [...lab.exec('pi').slice(1), process.execPath, '-e', MDNS_JS_ADVERTISER], 'announcing');
    // mdns-js probes for ~1 s before it announces.
    await new Promise((r) => setTimeout(r, 1500));

    const { services, output } = await avahiBrowse(lab.exec('laptop'), `${dir}/browse`, 'laptop-avahi', '_nix-cache._tcp', daemonPids);
    const ours = services.find((s) => s.name === 'bonjour pi');
    expect(ours, output).toBeDefined();
    expect(ours!.address).toBe(pi);
    expect(ours!.port).toBe(8080);
    expect(ours!.host).toBe('bonjour-pi.local');
    expect([...ours!.txt].sort()).toEqual(['key=pi.lan-1', 'path=/cache/', 'priority=30']);

    const theirs = services.find((s) => s.name === 'mdnsjs-pi');
    expect(theirs, output).toBeDefined();
    expect(theirs!.port).toBe(8081);
    // The measured bug: the value's dot became a string boundary.
    expect(theirs!.txt).toContain('key=pi');
    expect(theirs!.txt).toContain('lan-1');
    expect(theirs!.txt).not.toContain('key=pi.lan-1');

    // SIGTERM: announce says goodbye and exits cleanly.
    await stopProcess(announce.child, 'SIGTERM');
    expect(announce.child.exitCode).toBe(0);
    expect(announce.logs.some((l) => l.event === 'shutdown')).toBe(true);
    await stopProcess(mdnsjs.child, 'SIGTERM');
  });
});
