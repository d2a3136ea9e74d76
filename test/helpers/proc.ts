import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { once } from 'node:events';

/**
 * Every process a test starts goes through here, so `stopAll` can stop each
 * one by its PID, even when a test fails half way.
 */
const running = new Set<ChildProcess>();

export function startProcess(cmd: string, args: string[], options: SpawnOptions = {}): ChildProcess {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  running.add(child);
  child.once('exit', () => running.delete(child));
  return child;
}

export async function stopProcess(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = once(child, 'exit');
  process.kill(child.pid, signal);
  const timer = setTimeout(() => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGKILL');
  }, graceMs);
  await exited;
  clearTimeout(timer);
}

/**
 * SIGKILLs a process started with `detached: true` together with every child
 * it started (its process group), and returns once none of them is left:
 * what a power cut or the OOM killer does to a command and its pipeline.
 */
export async function killProcessGroup(child: ChildProcess): Promise<void> {
  if (child.pid === undefined) return;
  const exited = child.exitCode === null && child.signalCode === null ? once(child, 'exit') : Promise.resolve();
  const alive = () => {
    try {
      process.kill(-child.pid!, 0);
      return true;
    } catch {
      return false;
    }
  };
  if (alive()) process.kill(-child.pid, 'SIGKILL');
  await exited;
  for (let i = 0; i < 200 && alive(); i++) await new Promise((r) => setTimeout(r, 10));
  if (alive()) throw new Error(`process group ${child.pid} outlived SIGKILL`);
}

export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((c) => stopProcess(c)));
}

export interface RunResult {
  code: number | null;
  /** The signal that ended it, if one did (the timeout's SIGKILL, or a crash). */
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs a command to completion, killing it (by PID) if it outlives `timeoutMs`. */
export async function run(cmd: string, args: string[], options: SpawnOptions & { timeoutMs?: number } = {}): Promise<RunResult> {
  const started = performance.now();
  const child = startProcess(cmd, args, options);
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => {
    if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
  }, options.timeoutMs ?? 120_000);
  const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
  clearTimeout(timer);
  return { code, signal, stdout, stderr, ms: performance.now() - started };
}

export async function runOk(cmd: string, args: string[], options: SpawnOptions & { timeoutMs?: number } = {}): Promise<string> {
  const res = await run(cmd, args, options);
  if (res.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${res.code}\n${res.stderr}`);
  return res.stdout;
}

export type LogEntry = Record<string, unknown>;

/**
 * Collects a process's JSON log lines (pino) from `stream` into `logs` and
 * calls `onEntry` for each; a line that isn't JSON is kept as `{ raw }`.
 */
export function collectJsonLines(stream: NodeJS.ReadableStream, logs: LogEntry[], onEntry: (entry: LogEntry) => void = () => {}): void {
  let buffered = '';
  stream.on('data', (d: Buffer) => {
    buffered += d.toString();
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      let entry: LogEntry;
      try {
        entry = JSON.parse(line) as LogEntry;
      } catch {
        entry = { raw: line };
      }
      logs.push(entry);
      onEntry(entry);
    }
  });
}

/** A live process's resident set (VmRSS) and its peak so far (VmHWM), in MiB, from /proc. */
export async function memoryOf(pid: number): Promise<{ rssMiB: number; hwmMiB: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
    if (!m) throw new Error(`no ${field} for pid ${pid}`);
    return Number(m[1]) / 1024;
  };
  return { rssMiB: kb('VmRSS'), hwmMiB: kb('VmHWM') };
}
