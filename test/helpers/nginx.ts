import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { freePort, waitForPort } from './ports.js';
import { startProcess, stopProcess } from './proc.js';

export interface AccessLogEntry {
  method: string;
  uri: string;
  status: number;
  bytes: number;
}

export interface NginxOptions {
  /** Directory served as the cache root. */
  root: string;
  /** Working dir for config, pid and logs. */
  workDir: string;
  port?: number;
  /** nginx `limit_rate` for NAR files, e.g. '2m' (bytes/s), so a cut lands mid-stream. */
  limitRate?: string;
  /** Extra directives inside `http {}` (e.g. a proxy for the benchmark peer). */
  extraHttp?: string;
  /** Address to listen on (default 127.0.0.1), e.g. an address inside a network namespace. */
  host?: string;
  /** Command prefix to run nginx with, e.g. ['ip', 'netns', 'exec', 'NS']; readiness is then read from the pid file. */
  wrapper?: string[];
}

/** An access log in the `cache` format (`$request_method $uri $status $body_bytes_sent`). */
export async function readAccessLog(path: string): Promise<AccessLogEntry[]> {
  const text = await readFile(path, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [method, uri, status, bytes] = line.split(' ');
      return { method: method!, uri: uri!, status: Number(status), bytes: Number(bytes) };
    });
}

/** A real nginx serving a static binary cache on 127.0.0.1: the "Pi" or an "upstream". */
export class Nginx {
  private child: ChildProcess | undefined;
  readonly accessLog: string;
  readonly port: number;

  private constructor(private readonly options: NginxOptions, port: number) {
    this.port = port;
    this.accessLog = join(options.workDir, 'access.log');
  }

  get url(): string {
    return `http://${this.options.host ?? '127.0.0.1'}:${this.port}/`;
  }

  static async start(options: NginxOptions): Promise<Nginx> {
    const n = new Nginx(options, options.port ?? (await freePort()));
    await n.start();
    return n;
  }

  async start(): Promise<void> {
    const { workDir, root, limitRate, extraHttp } = this.options;
    await mkdir(join(workDir, 'tmp'), { recursive: true });
    const conf = `
user root;
worker_processes 1;
pid ${workDir}/nginx.pid;
error_log ${workDir}/error.log warn;
events { worker_connections 512; }
http {
  log_format cache '$request_method $uri $status $body_bytes_sent';
  access_log ${this.accessLog} cache;
  client_body_temp_path ${workDir}/tmp;
  proxy_temp_path ${workDir}/tmp;
  fastcgi_temp_path ${workDir}/tmp;
  uwsgi_temp_path ${workDir}/tmp;
  scgi_temp_path ${workDir}/tmp;
  sendfile on;
  types { text/x-nix-narinfo narinfo; }
  default_type application/octet-stream;
  ${extraHttp ?? ''}
  server {
    listen ${this.options.host ?? '127.0.0.1'}:${this.port};
    root ${root};
    location /nar/ { ${limitRate ? `limit_rate ${limitRate};` : ''} }
  }
}
`;
    const confPath = join(workDir, 'nginx.conf');
    await writeFile(confPath, conf);
    const args = ['-c', confPath, '-p', workDir, '-g', 'daemon off;'];
    const [cmd, ...pre] = this.options.wrapper ?? [];
    if (!cmd) {
      this.child = startProcess('nginx', args, { stdio: 'ignore' });
      await waitForPort(this.port);
      return;
    }
    // Inside a namespace the port can't be reached from here; nginx writes its pid file after it listens.
    const pidFile = join(workDir, 'nginx.pid');
    await rm(pidFile, { force: true });
    this.child = startProcess(cmd, [...pre, 'nginx', ...args], { stdio: 'ignore' });
    const deadline = Date.now() + 10_000;
    for (let i = 0; i < 400 && Date.now() < deadline; i++) {
      if ((await readFile(pidFile, 'utf8').catch(() => '')).trim()) return;
      if (this.child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`nginx in ${pre.join(' ')} did not start: ${await readFile(join(workDir, 'error.log'), 'utf8').catch(() => '')}`);
  }

  async stop(): Promise<void> {
    if (this.child) await stopProcess(this.child, 'SIGTERM');
    this.child = undefined;
  }

  async log(): Promise<AccessLogEntry[]> {
    return readAccessLog(this.accessLog);
  }

  /** NAR downloads this server answered with 2xx. */
  async narHits(): Promise<AccessLogEntry[]> {
    return (await this.log()).filter((e) => e.uri.startsWith('/nar/') && e.status >= 200 && e.status < 300 && e.method === 'GET');
  }
}
