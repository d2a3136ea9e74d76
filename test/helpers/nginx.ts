import { mkdir, readFile, writeFile } from 'node:fs/promises';
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
    return `http://127.0.0.1:${this.port}/`;
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
    listen 127.0.0.1:${this.port};
    root ${root};
    location /nar/ { ${limitRate ? `limit_rate ${limitRate};` : ''} }
  }
}
`;
    const confPath = join(workDir, 'nginx.conf');
    await writeFile(confPath, conf);
    this.child = startProcess('nginx', ['-c', confPath, '-p', workDir, '-g', 'daemon off;'], { stdio: 'ignore' });
    await waitForPort(this.port);
  }

  async stop(): Promise<void> {
    if (this.child) await stopProcess(this.child, 'SIGTERM');
    this.child = undefined;
  }

  async log(): Promise<AccessLogEntry[]> {
    const text = await readFile(this.accessLog, 'utf8').catch(() => '');
    return text
      .split('\n')
      .filter(Boolean)
      .map((line) => {
        const [method, uri, status, bytes] = line.split(' ');
        return { method: method!, uri: uri!, status: Number(status), bytes: Number(bytes) };
      });
  }

  /** NAR downloads this server answered with 2xx. */
  async narHits(): Promise<AccessLogEntry[]> {
    return (await this.log()).filter((e) => e.uri.startsWith('/nar/') && e.status >= 200 && e.status < 300 && e.method === 'GET');
  }
}
