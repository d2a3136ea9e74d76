import { createHash, generateKeyPairSync, randomBytes, randomInt } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import * as zlib from 'node:zlib';
import { sha256Digits, sha256FromBytes } from '../../src/protocol/hash.js';
import { serialiseNarInfo, type NarInfo } from '../../src/protocol/narinfo.js';
import { NIX32_CHARS } from '../../src/protocol/nix32.js';
import { parseSecretKey, signNarInfo, type SecretKey } from '../../src/protocol/signing.js';

/** A Nix-format signing key made in-process: `secret` for signNarInfo, `publicText` for trusted-public-key. */
export function makeKey(name: string): { secret: SecretKey; publicText: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const seed = privateKey.export({ format: 'der', type: 'pkcs8' }).subarray(-32);
  const pub = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
  const secret = parseSecretKey(`${name}:${Buffer.concat([seed, pub]).toString('base64')}`);
  return { secret, publicText: secret.publicKey.text };
}

export function randomStoreHash(): string {
  return Array.from({ length: 32 }, () => NIX32_CHARS[randomInt(NIX32_CHARS.length)]).join('');
}

export type Misbehaviour =
  /** Serves other bytes of the same length than the narinfo describes. */
  | 'corrupt'
  /** Sends half the file, then destroys the connection. */
  | 'cut'
  /** Sends half the file, then waits for `release()`. */
  | 'stall';

export interface FakePath {
  storeHash: string;
  storePath: string;
  baseName: string;
  nar: Buffer;
  file: Buffer;
  info: NarInfo;
  misbehave?: Misbehaviour;
}

function compress(nar: Buffer, compression: 'none' | 'zstd' | 'xz'): Buffer {
  if (compression === 'none') return nar;
  if (compression === 'zstd') return (zlib as unknown as { zstdCompressSync(b: Buffer): Buffer }).zstdCompressSync(nar);
  return spawnSync('xz', ['-c', '-0'], { input: nar, maxBuffer: 1 << 30 }).stdout;
}

/**
 * An upstream binary cache in this process, written to misbehave on demand:
 * it serves generated paths signed by `key`, counts every request, and can
 * corrupt, cut or stall a NAR, sign with another key, or refuse everything.
 */
export class FakeUpstream {
  readonly paths = new Map<string, FakePath>();
  readonly requests: string[] = [];
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private stalled: Array<() => void> = [];
  url = '';
  /** Answer every request with this status (e.g. 503: upstream down). */
  failWith: number | undefined;

  constructor(readonly key: SecretKey) {}

  add(name: string, size: number, opts: { compression?: 'none' | 'zstd' | 'xz'; references?: FakePath[]; signWith?: SecretKey; misbehave?: Misbehaviour } = {}): FakePath {
    const storeHash = randomStoreHash();
    const baseName = `${storeHash}-${name}`;
    const nar = randomBytes(size);
    const compression = opts.compression ?? 'zstd';
    const file = compress(nar, compression);
    const fileHash = sha256FromBytes(createHash('sha256').update(file).digest());
    let info: NarInfo = {
      storePath: `/nix/store/${baseName}`,
      path: { hash: storeHash, name, baseName },
      url: `nar/${sha256Digits(fileHash)}.nar${compression === 'none' ? '' : compression === 'zstd' ? '.zst' : '.xz'}`,
      compression,
      fileHash,
      fileSize: file.length,
      narHash: sha256FromBytes(createHash('sha256').update(nar).digest()),
      narSize: nar.length,
      references: [...(opts.references ?? []).map((r) => r.baseName)].sort(),
      sigs: [],
      extra: [],
    };
    info = signNarInfo(info, opts.signWith ?? this.key);
    const p: FakePath = { storeHash, storePath: info.storePath, baseName, nar, file, info, ...(opts.misbehave ? { misbehave: opts.misbehave } : {}) };
    this.paths.set(storeHash, p);
    return p;
  }

  narRequests(p: FakePath): number {
    return this.requests.filter((r) => r === `/${p.info.url}`).length;
  }

  /** Lets stalled NARs finish. */
  release(): void {
    const s = this.stalled;
    this.stalled = [];
    for (const f of s) f();
  }

  async start(): Promise<void> {
    this.server = createServer((req, res) => this.handle(req, res));
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as { port: number }).port}/`;
  }

  async stop(): Promise<void> {
    this.release();
    for (const s of this.sockets) s.destroy();
    await new Promise((r) => this.server?.close(r));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = req.url ?? '/';
    this.requests.push(url);
    res.on('error', () => {});
    if (this.failWith) return void res.writeHead(this.failWith).end();
    if (url === '/nix-cache-info') return void res.end('StoreDir: /nix/store\n');
    const narinfo = /^\/([0-9a-z]{32})\.narinfo$/.exec(url);
    if (narinfo) {
      const p = this.paths.get(narinfo[1]!);
      if (!p) return void res.writeHead(404).end();
      return void res.writeHead(200, { 'content-type': 'text/x-nix-narinfo' }).end(serialiseNarInfo(p.info));
    }
    const p = [...this.paths.values()].find((x) => `/${x.info.url}` === url);
    if (!p) return void res.writeHead(404).end();
    const body = p.misbehave === 'corrupt' ? Buffer.from(p.file.map((b, i) => (i === p.file.length >> 1 ? b ^ 0xff : b))) : p.file;
    res.writeHead(200, { 'content-type': 'application/x-nix-nar', 'content-length': body.length });
    if (p.misbehave !== 'cut' && p.misbehave !== 'stall') return void res.end(body);
    const half = body.length >> 1;
    res.write(body.subarray(0, half), () => {
      if (p.misbehave === 'cut') setTimeout(() => res.destroy(), 50);
      else this.stalled.push(() => res.end(body.subarray(half)));
    });
  }
}
