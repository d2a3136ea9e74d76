import type { ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { readAccessLog, type AccessLogEntry } from './nginx.js';
import { freePort } from './ports.js';
import { collectJsonLines, startProcess, stopProcess, type LogEntry } from './proc.js';
import { CLI } from './proxy.js';
import { startServerBlock } from './pi-server-block.js';

const DOC = new URL('../../docs/pi.md', import.meta.url);

/** The nginx server block of docs/pi.md's "Filling from upstream", exactly as written. */
export async function docFillBlock(): Promise<string> {
  const text = await readFile(DOC, 'utf8');
  const section = text.slice(text.indexOf('## Filling from upstream'));
  const block = /```nginx\n([\s\S]*?)```/.exec(section)?.[1];
  if (!block) throw new Error('docs/pi.md has no nginx block under "Filling from upstream"');
  return block;
}

export interface FillProcess {
  url: string;
  port: number;
  child: ChildProcess;
  logs: LogEntry[];
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts the real CLI's `nix-lan-cache fill` and waits until it listens. */
export async function startFill(args: string[], port?: number): Promise<FillProcess> {
  const listenPort = port ?? (await freePort());
  const child = startProcess(process.execPath, [CLI, 'fill', '--listen', `127.0.0.1:${listenPort}`, '--log-level', 'debug', ...args], {
    env: { ...process.env, NIX_LAN_CACHE_LOG_FORMAT: 'json' },
  });
  const logs: LogEntry[] = [];
  const listening = new Promise<string>((resolve, reject) => {
    collectJsonLines(child.stderr!, logs, (e) => e.event === 'listening' && resolve(e.url as string));
    child.once('exit', (code) => reject(new Error(`fill exited with ${code} before listening: ${JSON.stringify(logs.slice(-5))}`)));
  });
  const timer = setTimeout(() => child.pid && process.kill(child.pid, 'SIGKILL'), 15_000);
  const url = await listening.finally(() => clearTimeout(timer));
  return { url, port: listenPort, child, logs, stop: (signal: NodeJS.Signals = 'SIGTERM') => stopProcess(child, signal) };
}

export interface PiNginx {
  url: string;
  accessLog: string;
  stop(): Promise<void>;
  /** `METHOD URI STATUS BYTES` per request. */
  log(): Promise<AccessLogEntry[]>;
}

/** Real nginx running docs/pi.md's fill block as written, with only the port, root and fill's port changed. */
export async function startPiNginx(workDir: string, cacheDir: string, fillPort: number): Promise<PiNginx> {
  const port = await freePort();
  const block = (await docFillBlock())
    .replace('listen 8080; listen [::]:8080;', `listen 127.0.0.1:${port};`)
    .replace('root /srv/nix-cache;', `root ${cacheDir};`)
    .replace('proxy_pass http://127.0.0.1:37516;', `proxy_pass http://127.0.0.1:${fillPort};`);
  for (const must of [`listen 127.0.0.1:${port};`, `root ${cacheDir};`, `proxy_pass http://127.0.0.1:${fillPort};`]) {
    if (!block.includes(must)) throw new Error(`docs/pi.md's fill block changed: could not set ${must}`);
  }
  const nginx = await startServerBlock(block, workDir, port, { logFormat: '$request_method $uri $status $body_bytes_sent' });
  return { url: `http://127.0.0.1:${port}/`, accessLog: nginx.accessLog, stop: nginx.stop, log: () => readAccessLog(nginx.accessLog) };
}
