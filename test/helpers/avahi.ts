import type { ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run, startProcess } from './proc.js';

/**
 * Debian's avahi-daemon and avahi-browse inside a network namespace, without
 * systemd and without touching the machine's own /run: each runs in a private
 * mount namespace (`unshare -m`) with a tmpfs on /run (shared/reference/nix-facts.md).
 */

function conf(hostName: string, dbus: boolean): string {
  return `[server]
host-name=${hostName}
domain-name=local
use-ipv4=yes
use-ipv6=no
allow-interfaces=eth0
enable-dbus=${dbus ? 'yes' : 'no'}
ratelimit-interval-usec=1000000
ratelimit-burst=1000
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
publish-aaaa-on-ipv4=no
[reflector]
[rlimits]
`;
}

/**
 * avahi-daemon publishing the service files in `services` (name → XML). The
 * returned process is avahi-daemon itself (ip netns exec, unshare and sh all
 * exec), so stopping it by PID stops the daemon.
 */
export async function startAvahiPublisher(wrapper: string[], workDir: string, hostName: string, services: Record<string, string>): Promise<ChildProcess> {
  const svcDir = join(workDir, 'services');
  await mkdir(svcDir, { recursive: true });
  for (const [name, xml] of Object.entries(services)) await writeFile(join(svcDir, name), xml);
  const confPath = join(workDir, 'avahi-daemon.conf');
  await writeFile(confPath, conf(hostName, false));
  const script = `set -e
mount -t tmpfs none /run
mkdir -p /run/avahi-daemon
mount --bind '${svcDir}' /etc/avahi/services
exec avahi-daemon -f '${confPath}' --no-drop-root --no-chroot --no-rlimits`;
  const [cmd, ...pre] = wrapper;
  return startProcess(cmd!, [...pre, 'unshare', '-m', 'sh', '-c', script], { stdio: 'ignore' });
}

export interface BrowsedService {
  interface: string;
  name: string;
  type: string;
  host: string;
  address: string;
  port: number;
  /** TXT strings, each exactly as avahi-browse printed it (unquoted). */
  txt: string[];
}

/**
 * `avahi-browse -rtp TYPE` inside the namespace: D-Bus and an avahi-daemon
 * with D-Bus started for the purpose, both stopped by PID before returning
 * (also by the caller's PID list, should the script be killed).
 */
export async function avahiBrowse(wrapper: string[], workDir: string, hostName: string, type: string, pids: number[] = []): Promise<{ services: BrowsedService[]; output: string }> {
  await mkdir(workDir, { recursive: true });
  const confPath = join(workDir, 'avahi-browse.conf');
  await writeFile(confPath, conf(hostName, true));
  const script = `
mount -t tmpfs none /run || exit 1
mkdir -p /run/dbus /run/avahi-daemon
dbus-daemon --system --nofork --nopidfile & DBUS=$!
echo "pid $DBUS"
i=0; while [ ! -S /run/dbus/system_bus_socket ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
avahi-daemon -f '${confPath}' --no-drop-root --no-chroot --no-rlimits & AVAHI=$!
echo "pid $AVAHI"
i=0; until avahi-browse -atp >/dev/null 2>&1 || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done
sleep 1
timeout 15 avahi-browse -rtp ${type}
kill $AVAHI $DBUS
wait
`;
  const [cmd, ...pre] = wrapper;
  const res = await run(cmd!, [...pre, 'unshare', '-m', 'sh', '-c', script], { timeoutMs: 40_000 });
  for (const m of res.stdout.matchAll(/^pid (\d+)$/gm)) pids.push(Number(m[1]));
  const services: BrowsedService[] = [];
  for (const line of res.stdout.split('\n')) {
    if (!line.startsWith('=;')) continue;
    const f = line.split(';');
    if (f.length < 10) continue;
    services.push({
      interface: f[1]!,
      name: unescape(f[3]!),
      type: f[4]!,
      host: f[6]!,
      address: f[7]!,
      port: Number(f[8]),
      txt: [...f.slice(9).join(';').matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1]!),
    });
  }
  return { services, output: res.stdout + res.stderr };
}

/** SIGKILLs the daemons `avahiBrowse` reported in `pids` (left only if its script was killed); those already gone are skipped. */
export function killBrowseDaemons(pids: readonly number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** avahi-browse -p escapes names: `\\032` is a space, `\\046` a dot. */
function unescape(s: string): string {
  return s.replace(/\\(\d{3})/g, (_, d: string) => String.fromCharCode(Number(d))).replace(/\\(.)/g, '$1');
}
