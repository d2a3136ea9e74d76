/**
 * The floor for any Node proxy: an HTTP server that pipes one upstream URL
 * through undici (as the proxy does) with nothing else: no routing, no
 * narinfo lookup, no stats. Run as a child process; prints its port.
 *   node pipe-server.ts UPSTREAM_FILE_URL
 */
import { createServer } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { Agent } from 'undici';

const target = new URL(process.argv[2]!);
const agent = new Agent();
const server = createServer((_req, res) => {
  agent
    .request({ origin: target.origin, path: target.pathname, method: 'GET' })
    .then(async (up) => {
      res.writeHead(up.statusCode, { 'content-length': String(up.headers['content-length']) });
      await pipeline(up.body, res);
    })
    .catch(() => res.destroy());
});
server.listen(0, '127.0.0.1', () => process.stdout.write(`${(server.address() as { port: number }).port}\n`));
process.once('SIGTERM', () => {
  server.close();
  void agent.close();
  process.exit(0);
});
