import { readFile } from 'node:fs/promises';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { run } from '../helpers/proc.js';

async function version(cmd: string, args: string[]): Promise<string> {
  const res = await run(cmd, args, { timeoutMs: 10_000 }).catch(() => undefined);
  return (res ? `${res.stdout}${res.stderr}` : '').trim().split('\n')[0] ?? 'unknown';
}

export async function describeMachine(): Promise<Array<[string, string]>> {
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? cpus()[0]?.model ?? 'unknown';
  const osRelease = await readFile('/etc/os-release', 'utf8').catch(() => '');
  const os = /^PRETTY_NAME="?([^"\n]+)"?$/m.exec(osRelease)?.[1] ?? 'unknown';
  return [
    ['date', new Date().toISOString().replace('T', ' ').slice(0, 16) + ' UTC'],
    ['CPU', `${model}, ${cpus().length} cores`],
    ['memory', `${(totalmem() / 2 ** 30).toFixed(1)} GiB`],
    ['load average at start (1, 5, 15 min)', loadavg().map((x) => x.toFixed(2)).join(', ')],
    ['OS', `${os}, Linux ${release()}`],
    ['node', process.version],
    ['nix', await version('nix', ['--version'])],
    ['nginx', (await version('nginx', ['-v'])).replace('nginx version: ', '')],
    ['curl', (await version('curl', ['--version'])).split(' ').slice(0, 2).join(' ')],
    ['autocannon', JSON.parse(await readFile(new URL('../../node_modules/autocannon/package.json', import.meta.url), 'utf8')).version as string],
  ];
}
