import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { until } from './wait.js';
import { collectJsonLines, startProcess, stopProcess, type LogEntry } from './proc.js';

export const CLI = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

export interface ProxyProcess {
  url: string;
  child: ChildProcess;
  /** Every JSON log line so far. */
  logs: Array<Record<string, unknown>>;
  stdout: () => string;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * Starts the real CLI (`nix-lan-cache serve`) on a kernel-chosen port. Always
 * `--no-mdns` unless the caller runs it inside a network namespace.
 */
export async function startProxy(
  args: string[],
  options: {
    env?: NodeJS.ProcessEnv;
    wrapper?: string[];
    /** another build's main.js (e.g. the version before an upgrade) */
    cli?: string;
    /** Run the CLI as `npx nix-lan-cache` does: the executable itself (its #! line) rather than `node main.js`. */
    asFromNpm?: boolean;
  } = {},
): Promise<ProxyProcess> {
  const cliPath = options.cli ?? CLI;
  const argv = ['serve', '--listen', '127.0.0.1:0', '--log-level', 'debug', ...args];
  // Stats persist by default (~/.local/state): without --state-dir, keep them in a temp dir removed on stop.
  const ownState = !args.includes('--state-dir') && !options.env?.XDG_STATE_HOME && !options.env?.STATE_DIRECTORY ? mkdtempSync(join(tmpdir(), 'nlc-proxy-state-')) : undefined;
  // Its compile cache (src/cli/compile-cache.ts) and NAR spool (~/.cache) go there too, not into the home of whoever runs the tests.
  if (ownState) options = { ...options, env: { XDG_CACHE_HOME: ownState, CACHE_DIRECTORY: '', ...options.env, XDG_STATE_HOME: ownState, STATE_DIRECTORY: '' } };
  const [cmd, ...pre] = options.wrapper ?? [];
  // The CLI sets its own memory settings (src/cli/memory.ts): none leak in from the test runner's environment.
  const env = { ...withoutMemorySettings(process.env), NIX_LAN_CACHE_LOG_FORMAT: 'json', ...(options.asFromNpm ? { PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}` } : {}), ...options.env };
  const node = options.asFromNpm ? [] : [process.execPath];
  const child = cmd ? startProcess(cmd, [...pre, ...node, cliPath, ...argv], { env }) : startProcess(node[0] ?? cliPath, [...(node.length ? [cliPath] : []), ...argv], { env });
  // However the process ends (stop(), a signal sent by the test, a crash), its state dir goes with it.
  if (ownState) child.once('exit', () => rmSync(ownState, { recursive: true, force: true }));
  const logs: Array<Record<string, unknown>> = [];
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const listening = new Promise<string>((resolve, reject) => {
    collectJsonLines(child.stderr!, logs, (entry) => {
      if (entry.event === 'listening') resolve(entry.url as string);
    });
    child.once('exit', (code) => reject(new Error(`proxy exited with ${code} before listening: ${JSON.stringify(logs.slice(-5))}`)));
  });
  const timeout = setTimeout(() => child.pid && process.kill(child.pid, 'SIGKILL'), 15_000);
  const url = await listening.finally(() => clearTimeout(timeout));
  return {
    url,
    child,
    logs,
    stdout: () => out,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      await stopProcess(child, signal);
    },
  };
}

function withoutMemorySettings(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(env).filter(([k]) => !k.startsWith('MALLOC_') && k !== 'NODE_OPTIONS' && k !== 'NIX_LAN_CACHE_MEMORY_SET'));
}

export async function exitCode(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const [code] = (await once(child, 'exit')) as [number | null];
  return code;
}

/**
 * Runs `nix-lan-cache serve ARGS` (optionally inside a namespace) that is
 * expected not to start, to its end: its exit code, its JSON log lines, when
 * it logged `start-failed` and when it exited. Killed after 15 s.
 */
export async function serveUntilExit(args: string[], options: { wrapper?: string[] } = {}): Promise<{ code: number | null; logs: LogEntry[]; failedAt: number; exitedAt: number }> {
  const [cmd, ...pre] = options.wrapper ?? [];
  const argv = [CLI, 'serve', ...args];
  const env = { ...process.env, NIX_LAN_CACHE_LOG_FORMAT: 'json' };
  const child = cmd ? startProcess(cmd, [...pre, process.execPath, ...argv], { env }) : startProcess(process.execPath, argv, { env });
  const logs: LogEntry[] = [];
  let failedAt = 0;
  collectJsonLines(child.stderr!, logs, (l) => {
    if (l.event === 'start-failed') failedAt = Date.now();
  });
  const killer = setTimeout(() => child.pid && process.kill(child.pid, 'SIGKILL'), 15_000);
  const code = await exitCode(child);
  clearTimeout(killer);
  return { code, logs, failedAt, exitedAt: Date.now() };
}

/** `nix-lan-cache announce ARGS` run with `wrapper` (e.g. inside a namespace); resolves once it has published. */
export async function announce(wrapper: string[], args: string[]): Promise<ChildProcess> {
  const [cmd, ...pre] = wrapper;
  const child = startProcess(cmd!, [...pre, process.execPath, CLI, 'announce', ...args], { env: { ...process.env, NIX_LAN_CACHE_LOG_FORMAT: 'json' } });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  await until(`announce ${args.join(' ')}`, 10_000, () => {
    if (child.exitCode !== null) throw new Error(`announce exited ${child.exitCode}: ${err}`);
    return err.includes('"event":"announcing"') || undefined;
  });
  return child;
}
