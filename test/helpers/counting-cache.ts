import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { sha256FromBytes } from '../../src/protocol/hash.js';
import { serialiseNarInfo, type NarInfo } from '../../src/protocol/narinfo.js';
import { NIX32_CHARS } from '../../src/protocol/nix32.js';
import { parseSecretKey, signNarInfo, type SecretKey } from '../../src/protocol/signing.js';
import { parseStorePath } from '../../src/protocol/storepath.js';

/** In-process binary caches for tests: signed narinfos made on the fly, served by a server that counts. */

export function newKey(name: string): SecretKey {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const seed = privateKey.export({ format: 'der', type: 'pkcs8' }).subarray(-32);
  const pub = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
  return parseSecretKey(`${name}:${Buffer.concat([seed, pub]).toString('base64')}`);
}

export function storeHash(): string {
  const b = randomBytes(32);
  return Array.from({ length: 32 }, (_, i) => NIX32_CHARS[b[i]! & 31]).join('');
}

/** A signed narinfo for `/nix/store/<hash>-<name>` whose References are `refs` (store hashes). */
export function narinfo(hash: string, refs: string[], key: SecretKey): string {
  const narHash = sha256FromBytes(randomBytes(32));
  const storePath = `/nix/store/${hash}-p`;
  const info: NarInfo = {
    storePath,
    path: parseStorePath(storePath)!,
    url: `nar/${hash}.nar.xz`,
    compression: 'xz',
    fileHash: narHash,
    fileSize: 100,
    narHash,
    narSize: 100,
    references: refs.map((r) => `${r}-p`),
    sigs: [],
    extra: [],
  };
  return serialiseNarInfo(signNarInfo(info, key));
}

/**
 * A binary cache written to count: every request is recorded; requests for
 * hashes in `held` are not answered until `release()`; tracks how many
 * narinfo requests were open at once.
 */
export async function countingCache(files: Map<string, string>) {
  const requests: string[] = [];
  const events = new EventEmitter();
  const held = new Set<string>();
  let waiting: Array<() => void> = [];
  let open = 0;
  let maxOpen = 0;
  const answer = (hash: string, res: ServerResponse) => {
    const text = hash === 'nix-cache-info' ? 'StoreDir: /nix/store\n' : files.get(hash);
    if (text === undefined) res.writeHead(404).end();
    else res.writeHead(200, { 'content-type': 'text/x-nix-narinfo' }).end(text);
  };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = req.url!.slice(1);
    requests.push(path);
    events.emit('request', path);
    const hash = path.replace(/\.narinfo$/, '');
    open++;
    maxOpen = Math.max(maxOpen, open);
    res.on('close', () => open--);
    if (held.has(hash)) waiting.push(() => answer(hash, res));
    else answer(hash, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/`,
    requests,
    held,
    asked: (hash: string) => requests.filter((p) => p === `${hash}.narinfo`).length,
    get maxOpen() {
      return maxOpen;
    },
    /** Resolves once `n` narinfo requests in all have arrived (bounded by vitest's test timeout). */
    async untilRequests(n: number) {
      while (requests.filter((p) => p.endsWith('.narinfo')).length < n) await once(events, 'request');
    },
    release() {
      held.clear();
      const w = waiting;
      waiting = [];
      for (const f of w) f();
    },
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}
export type CountingCache = Awaited<ReturnType<typeof countingCache>>;
