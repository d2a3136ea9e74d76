import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createServer as createTcpServer, type Server as TcpServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDir, tempDir } from '../helpers/nix.js';
import { stopAll } from '../helpers/proc.js';
import { exitCode, serveUntilExit, startProxy } from '../helpers/proxy.js';

let work: string;
let upstream: Server;
let upstreamUrl: string;
let n = 0;

beforeAll(async () => {
  work = await tempDir('stops');
  // An upstream that has nothing: every narinfo is a 404.
  upstream = createServer((req, res) => {
    res.statusCode = req.url === '/nix-cache-info' ? 200 : 404;
    res.end(req.url === '/nix-cache-info' ? 'StoreDir: /nix/store\n' : 'not here');
  });
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  upstreamUrl = `http://127.0.0.1:${(upstream.address() as { port: number }).port}/`;
});

afterAll(async () => {
  await stopAll();
  upstream?.close();
  if (work) await removeDir(work);
});

const stateDir = () => join(work, `state-${++n}`);
const narinfo = (url: string, hash: string) => fetch(`${url}/${hash}.narinfo`).then((r) => r.status);

describe('how the proxy stops', () => {
  it('port already taken: exit 1 within a second of the failure, a message naming the port, counters saved, lock released', async () => {
    const blocker: TcpServer = createTcpServer();
    blocker.listen(0, '127.0.0.1');
    await once(blocker, 'listening');
    const port = (blocker.address() as { port: number }).port;
    try {
      const state = stateDir();
      const { code, logs, failedAt, exitedAt } = await serveUntilExit(['--no-mdns', '--listen', `127.0.0.1:${port}`, '--upstream', upstreamUrl, '--state-dir', state]);
      expect(code).toBe(1);
      expect(failedAt).toBeGreaterThan(0);
      expect(exitedAt - failedAt).toBeLessThan(1000);
      const failed = logs.find((l) => l.event === 'start-failed')!;
      expect(String(failed.err)).toMatch(new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: .*EADDRINUSE.*choose another with --listen`));
      expect(existsSync(join(state, 'stats.json.lock'))).toBe(false);
      expect(existsSync(join(state, 'stats.json'))).toBe(true);
      console.log(`port taken: exited ${exitedAt - failedAt} ms after the failure`);
    } finally {
      blocker.close();
    }
  });

  it('SIGHUP: a graceful stop like SIGTERM: exit 0, counters since the last save are on disk, lock released', async () => {
    const state = stateDir();
    // Saves only at shutdown, so what is on disk afterwards was saved by the stop.
    const proxy = await startProxy(['--no-mdns', '--upstream', upstreamUrl, '--state-dir', state], { env: { NIX_LAN_CACHE_STATS_FLUSH_MS: '3600000' } });
    expect(existsSync(join(state, 'stats.json.lock'))).toBe(true);
    for (const hash of ['0'.repeat(32), '1'.repeat(32), '2'.repeat(32)]) expect(await narinfo(proxy.url, hash)).toBe(404);
    process.kill(proxy.child.pid!, 'SIGHUP');
    expect(await exitCode(proxy.child)).toBe(0);
    expect(proxy.child.signalCode).toBeNull(); // not killed by the signal (that would be status 129)
    expect(proxy.logs).toContainEqual(expect.objectContaining({ event: 'shutdown', signal: 'SIGHUP' }));
    expect(existsSync(join(state, 'stats.json.lock'))).toBe(false);
    const saved = JSON.parse(readFileSync(join(state, 'stats.json'), 'utf8')) as { total: { client: { narinfo: { missing: number } } } };
    expect(saved.total.client.narinfo.missing).toBe(3);
  });
});
