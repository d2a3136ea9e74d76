import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Nginx } from '../helpers/nginx.js';
import { freePort, waitForPort } from '../helpers/ports.js';

/**
 * The peer a user could pick instead of the proxy: nginx as a fallback
 * reverse proxy, the Pi first and the upstream as `backup`, moving on on
 * errors, timeouts and 404s. A fairly tuned config: keepalive to both, short
 * timeouts so an absent Pi costs little.
 */
export const PEER_DIRECTIVES = (piHostPort: string, upstreamHostPort: string, port: number) => `
  upstream nix_peer {
    server ${piHostPort} max_fails=1 fail_timeout=10s;
    server ${upstreamHostPort} backup;
    keepalive 32;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://nix_peer;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_next_upstream error timeout http_404 http_502 http_503 http_504;
      proxy_connect_timeout 500ms;
      proxy_read_timeout 2s;
    }
  }
`;

export interface Peer {
  url: string;
  nginx: Nginx;
  stop(): Promise<void>;
}

/** Starts the peer nginx in `workDir`; `pi` and `upstream` are `http://127.0.0.1:PORT/` URLs. */
export async function startPeer(workDir: string, pi: string, upstream: string): Promise<Peer> {
  const hp = (u: string) => new URL(u).host;
  const port = await freePort();
  const root = join(workDir, 'empty');
  await mkdir(root, { recursive: true });
  await writeFile(join(root, 'nix-cache-info'), 'StoreDir: /nix/store\n');
  const nginx = await Nginx.start({ root, workDir, extraHttp: PEER_DIRECTIVES(hp(pi), hp(upstream), port) });
  await waitForPort(port);
  return { url: `http://127.0.0.1:${port}/`, nginx, stop: () => nginx.stop() };
}
