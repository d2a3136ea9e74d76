import { request, sharedAgent, type Dispatcher } from './undici.js';
import { errorMessage } from '../errors.js';
import { drop } from './body.js';
import type { OriginTimeouts } from './timeouts.js';
import type { RequestSigner } from '../s3/signer.js';

const MAX_CACHE_INFO_BYTES = 64 * 1024;

/**
 * Asks a binary cache for its `nix-cache-info`: undefined when it answers
 * for `/nix/store`, otherwise what is wrong. The background probe of an open
 * circuit and the admission of a discovered cache both rest on this.
 */
export async function checkCacheInfo(
  baseUrl: string,
  timeouts: Pick<OriginTimeouts, 'connectMs' | 'firstByteMs'>,
  dispatcher?: Dispatcher,
  signer?: RequestSigner,
): Promise<string | undefined> {
  try {
    const url = new URL('nix-cache-info', baseUrl);
    const headers = { 'user-agent': 'nix-lan-cache' };
    const res = await request(dispatcher ?? sharedAgent(), {
      origin: url.origin,
      path: url.pathname + url.search,
      method: 'GET',
      headers: signer ? await signer({ method: 'GET', url, headers }) : headers,
      headersTimeout: timeouts.firstByteMs,
      bodyTimeout: timeouts.firstByteMs,
      signal: AbortSignal.timeout(timeouts.connectMs + timeouts.firstByteMs),
    });
    if (res.statusCode !== 200) {
      drop(res.body, res.headers);
      return `its nix-cache-info answered HTTP ${res.statusCode}`;
    }
    let size = 0;
    const chunks: Buffer[] = [];
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > MAX_CACHE_INFO_BYTES) {
        res.body.destroy();
        return 'its nix-cache-info is too large';
      }
      chunks.push(chunk);
    }
    const storeDir = /^StoreDir:\s*(\S+)\s*$/m.exec(Buffer.concat(chunks).toString('utf8'))?.[1];
    if (storeDir !== '/nix/store') return `its nix-cache-info says StoreDir ${storeDir === undefined ? '(none)' : JSON.stringify(storeDir)}, not /nix/store`;
    return undefined;
  } catch (err) {
    return `its nix-cache-info did not answer: ${errorMessage(err)}`;
  }
}
