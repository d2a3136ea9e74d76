import type { ChildProcess } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readAccessLog, type AccessLogEntry } from './nginx.js';
import { freePort, waitForPort } from './ports.js';
import { collectJsonLines, startProcess, stopProcess, type LogEntry } from './proc.js';
import { CLI } from './proxy.js';

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
  child: ChildProcess;
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
  await mkdir(join(workDir, 'tmp'), { recursive: true });
  const accessLog = join(workDir, 'access.log');
  await writeFile(
    join(workDir, 'nginx.conf'),
    `user root; worker_processes 1; pid ${workDir}/nginx.pid; error_log ${workDir}/error.log warn;
events { worker_connections 256; }
http {
  include /etc/nginx/mime.types;
  log_format cache '$request_method $uri $status $body_bytes_sent';
  access_log ${accessLog} cache;
  sendfile on;
  client_body_temp_path ${workDir}/tmp; proxy_temp_path ${workDir}/tmp; fastcgi_temp_path ${workDir}/tmp; uwsgi_temp_path ${workDir}/tmp; scgi_temp_path ${workDir}/tmp;
${block}
}
`,
  );
  const child = startProcess('nginx', ['-c', join(workDir, 'nginx.conf'), '-p', workDir, '-g', 'daemon off;'], { stdio: 'ignore' });
  await waitForPort(port);
  return {
    url: `http://127.0.0.1:${port}/`,
    accessLog,
    child,
    stop: () => stopProcess(child),
    log: () => readAccessLog(accessLog),
  };
}
