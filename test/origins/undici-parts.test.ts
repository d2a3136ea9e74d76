import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { run } from '../helpers/proc.js';

const SERVE = fileURLToPath(new URL('../../dist/cli/serve.js', import.meta.url));

/**
 * The proxy loads undici's Agent and request() alone (origins/undici.ts):
 * all of undici is 2.8 MB more live heap, marked again by every major
 * collection, and 12 MB more RSS, for fetch, WebSocket and mocks the proxy
 * never uses (issue 23). Checked in a process of its own, as the proxy starts.
 */
describe("undici's parts in the proxy", () => {
  it('serve loads the Agent and its request(), not the package index (fetch, WebSocket, caches, mocks)', async () => {
    const script = [
      "import { createRequire } from 'node:module';",
      `await import(${JSON.stringify(SERVE)});`,
      'const loaded = Object.keys(createRequire(import.meta.url).cache).filter((k) => k.includes("/node_modules/undici/"));',
      'process.stdout.write(JSON.stringify(loaded));',
    ].join('\n');
    const res = await run(process.execPath, ['--input-type=module', '-e', script], { timeoutMs: 30_000 });
    expect(res.code, res.stderr).toBe(0);
    const loaded = JSON.parse(res.stdout) as string[];
    expect(loaded.some((k) => k.endsWith('/undici/lib/dispatcher/agent.js'))).toBe(true);
    expect(loaded.some((k) => k.endsWith('/undici/lib/api/api-request.js'))).toBe(true);
    expect(loaded.filter((k) => k.endsWith('/undici/index.js') || k.includes('/undici/lib/web/'))).toEqual([]);
  });
});
