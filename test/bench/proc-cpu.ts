import { execFileSync } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';

/** Clock ticks per second of /proc's CPU times. */
const TICK_MS = 1000 / Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim() || 100);

/** A process's own CPU time (all its threads), that of its reaped children, and each live child's, in ms. */
export interface CpuSnapshot {
  self: number;
  reaped: number;
  children: Map<number, number>;
}

/** utime + stime and cutime + cstime of /proc/PID/stat, in ms. */
async function statCpu(pid: number): Promise<{ self: number; reaped: number }> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start at field 3, the state.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
  return { self: (f[11]! + f[12]!) * TICK_MS, reaped: (f[13]! + f[14]!) * TICK_MS };
}

export async function cpuSnapshot(pid: number): Promise<CpuSnapshot> {
  const { self, reaped } = await statCpu(pid);
  const children = new Map<number, number>();
  for (const tid of await readdir(`/proc/${pid}/task`).catch(() => [])) {
    const kids = (await readFile(`/proc/${pid}/task/${tid}/children`, 'utf8').catch(() => '')).trim().split(' ').filter(Boolean);
    for (const kid of kids.map(Number)) {
      const c = await statCpu(kid).catch(() => undefined);
      if (c) children.set(kid, c.self);
    }
  }
  return { self, reaped, children };
}

/** CPU time between two snapshots: the process's own, and its children's (the proxy's `xz` processes), ms. */
export function cpuBetween(a: CpuSnapshot, b: CpuSnapshot): { self: number; children: number } {
  let children = b.reaped - a.reaped;
  for (const [pid, ms] of b.children) children += ms - (a.children.get(pid) ?? 0);
  return { self: b.self - a.self, children };
}

/** CPU time of this process's reaped children so far (cutime + cstime of /proc/self/stat), ms: a Nix run's, read around it. */
export async function reapedChildrenMs(): Promise<number> {
  return (await statCpu(process.pid)).reaped;
}

/** The whole machine's CPU counters (/proc/stat, all cores), jiffies. */
export interface MachineCpu {
  busy: number;
  total: number;
}

export async function machineCpu(): Promise<MachineCpu> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n', 1)[0]!;
  // cpu user nice system idle iowait irq softirq steal (guest times are inside user already)
  const f = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - f[3]! - f[4]!, total };
}

/** How many cores were busy on average between two readings (of all the machine's). */
export function coresBusy(a: MachineCpu, b: MachineCpu, cores: number): number {
  const total = b.total - a.total;
  return total > 0 ? ((b.busy - a.busy) / total) * cores : 0;
}
