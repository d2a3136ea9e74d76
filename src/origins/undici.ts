import { createRequire } from 'node:module';
import type * as Undici from 'undici';

/**
 * undici's Agent and its `request()`, and nothing else of undici.
 * `import 'undici'` loads all of it (fetch, WebSocket, EventSource, caches,
 * mocks, proxies): 2.8 MB more live heap, which every major collection marks
 * again, and 12 MB more RSS, none of which the proxy uses (measured on Node
 * 24, docs/dependencies.md). These are the files undici's own index
 * re-exports them from; package-lock.json pins the version, and every test of
 * an origin fails if they move.
 */
const require = createRequire(import.meta.url);

export const Agent = require('undici/lib/dispatcher/agent.js') as typeof Undici.Agent;
export type Agent = Undici.Agent;
export type { Dispatcher } from 'undici';

const apiRequest = require('undici/lib/api/api-request.js') as (this: Undici.Dispatcher, options: Undici.Dispatcher.RequestOptions) => Promise<Undici.Dispatcher.ResponseData>;

/** `dispatcher.request(options)` (undici's index adds `request` to the Dispatcher prototype; the Agent file alone does not). */
export function request(dispatcher: Undici.Dispatcher, options: Undici.Dispatcher.RequestOptions): Promise<Undici.Dispatcher.ResponseData> {
  return apiRequest.call(dispatcher, options);
}

let probes: Undici.Agent | undefined;
/** An agent for one-off requests with no origin's own (a discovered cache's first nix-cache-info). */
export function sharedAgent(): Undici.Agent {
  return (probes ??= new Agent({ keepAliveTimeout: 1000 }));
}
