import type { ChildProcess } from 'node:child_process';
import { copyFile, mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempName } from '../../src/push/target.js';
import { waitForPort } from './ports.js';
import { startProcess, stopProcess } from './proc.js';

/**
 * A Pi's nginx `server { … }` block (from docs/pi.md or rendered from the NixOS
 * module), run with real nginx. The block must already listen on loopback
 * only; `port` is where to wait for it.
 */
export interface PiNginx {
  accessLog: string;
  stop(): Promise<void>;
}

/** A server block the Pi module rendered, moved to loopback: 0.0.0.0 → 127.0.0.1, [::] → [::1], the module's cache dir → `cache`. */
export function onLoopback(block: string, port: number, cache: string): string {
  return block
    .replaceAll('listen 0.0.0.0:8080 ', `listen 127.0.0.1:${port} `)
    .replaceAll('listen [::]:8080 ', `listen [::1]:${port} `)
    .replaceAll('/var/lib/nix-cache', cache);
}

/** Runs a Pi's server block with real nginx (its own config, logs and temp dirs under `workDir`); returns once it listens on `port`. */
export async function startServerBlock(block: string, workDir: string, port: number, options: { logFormat?: string } = {}): Promise<PiNginx> {
  await mkdir(join(workDir, 'tmp'), { recursive: true });
  const accessLog = join(workDir, 'access.log');
  await writeFile(
    join(workDir, 'nginx.conf'),
    `user root; worker_processes 1; pid ${workDir}/nginx.pid; error_log ${workDir}/error.log warn;
events { worker_connections 64; }
http {
  include /etc/nginx/mime.types;
  ${options.logFormat ? `log_format custom '${options.logFormat}';\n  access_log ${accessLog} custom;` : `access_log ${accessLog};`}
  sendfile on;
  client_body_temp_path ${workDir}/tmp; proxy_temp_path ${workDir}/tmp; fastcgi_temp_path ${workDir}/tmp; uwsgi_temp_path ${workDir}/tmp; scgi_temp_path ${workDir}/tmp;
${block}
}
`,
  );
  const nginx: ChildProcess = startProcess('nginx', ['-c', join(workDir, 'nginx.conf'), '-p', workDir, '-g', 'daemon off;'], { stdio: 'ignore' });
  try {
    await waitForPort(port);
  } catch (err) {
    await stopProcess(nginx);
    throw err;
  }
  return { accessLog, stop: () => stopProcess(nginx) };
}

/**
 * What a cache holds while `push` is half-way: a narinfo and a NAR under
 * push's temporary names (the names src/push/target.ts gives them), each a
 * full copy of a real one, plus the short names `/.tmp-x.narinfo` and
 * `nar/.tmp-x`. Returns the URL paths of all four.
 */
export async function writePushTempFiles(cacheDir: string): Promise<string[]> {
  const narinfo = (await readdir(cacheDir)).find((f) => f.endsWith('.narinfo') && !f.startsWith('.'));
  const nar = (await readdir(join(cacheDir, 'nar'))).find((f) => !f.startsWith('.'));
  if (!narinfo || !nar) throw new Error(`${cacheDir} has no narinfo or NAR to copy`);
  const paths = [tempName('', '.narinfo'), '.tmp-x.narinfo', tempName('nar'), 'nar/.tmp-x'];
  for (const p of paths) {
    await copyFile(p.startsWith('nar/') ? join(cacheDir, 'nar', nar) : join(cacheDir, narinfo), join(cacheDir, p));
  }
  return paths;
}
