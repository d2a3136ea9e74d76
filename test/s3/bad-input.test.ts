import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkCacheUrls, resolveServeConfig } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';
import { createOrigin } from '../../src/origins/s3-origin.js';
import type { HttpOrigin } from '../../src/origins/http-origin.js';
import { TrustedKeys } from '../../src/protocol/signing.js';
import { Bucket, S3Error } from '../../src/s3/bucket.js';
import { bucketBaseUrl, formatS3Url, parseS3Url } from '../../src/s3/url.js';
import { uploadFile } from '../../src/s3/upload.js';
import { S3Files } from '../../src/push/s3-files.js';

const SECRET = 'test-secret-never-shown-0123456789';

describe('s3:// URLs, in Nix syntax', () => {
  it('reads bucket, endpoint, region, profile and the addressing style as Nix does', () => {
    const lab = parseS3Url('s3://nix-cache?endpoint=http://127.0.0.1:9000&region=eu-west-1&profile=lab');
    expect(lab).toMatchObject({ bucket: 'nix-cache', region: 'eu-west-1', profile: 'lab', pathStyle: true, customEndpoint: true });
    expect(bucketBaseUrl(lab)).toBe('http://127.0.0.1:9000/nix-cache/');
    expect(formatS3Url(lab)).toBe('s3://nix-cache?endpoint=http://127.0.0.1:9000&region=eu-west-1&profile=lab');
    // AWS itself: virtual-host style, regional endpoint, us-east-1 by default.
    expect(bucketBaseUrl(parseS3Url('s3://nix-cache'))).toBe('https://nix-cache.s3.us-east-1.amazonaws.com/');
    expect(bucketBaseUrl(parseS3Url('s3://nix-cache?region=eu-central-1&addressing-style=path'))).toBe('https://s3.eu-central-1.amazonaws.com/nix-cache/');
    // A dotted bucket cannot be a TLS virtual host: path style.
    expect(bucketBaseUrl(parseS3Url('s3://cache.example.org'))).toBe('https://s3.us-east-1.amazonaws.com/cache.example.org/');
    // An engine by host name, virtual-host style on request; Nix's deprecated bare endpoint with scheme=.
    expect(bucketBaseUrl(parseS3Url('s3://nix?endpoint=https://s3.lab.example&addressing-style=virtual'))).toBe('https://nix.s3.lab.example/');
    expect(bucketBaseUrl(parseS3Url('s3://nix?endpoint=minio.lab:9000&scheme=http'))).toBe('http://minio.lab:9000/nix/');
  });

  it.each([
    ['s3://', /no bucket name/],
    ['s3://Nix_Cache', /not a valid bucket name/],
    ['s3://nix/prefix', /a cache is a whole bucket/],
    ['s3://nix?compression=xz', /unknown parameter "compression" \(known: endpoint, region, profile, addressing-style, scheme\)/],
    ['s3://nix?region=eu-west-1&region=us-east-1', /given twice/],
    ['s3://nix?endpoint=ftp://host', /endpoint must be http:\/\/ or https:\/\//],
    ['s3://nix?addressing-style=sideways', /addressing-style must be auto, path or virtual/],
    ['s3://nix?endpoint=http://127.0.0.1:9000&addressing-style=virtual', /virtual-host style needs an endpoint with a host name/],
    ['s3://my.cache?addressing-style=virtual', /contains a dot/],
    ['s3://nix?endpoint=http://user:pw@host', /must not carry credentials/],
  ])('%s is refused: %s', (url, why) => {
    expect(() => parseS3Url(url)).toThrow(ConfigError);
    expect(() => parseS3Url(url)).toThrow(why);
  });

  it('credentials in the URL are refused without repeating them', () => {
    let message = '';
    try {
      parseS3Url(`s3://AKIA:${SECRET}@nix-cache?region=eu-west-1`);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toContain('credentials do not go in the URL');
    expect(message).not.toContain(SECRET);
    expect(() => checkCacheUrls('--lan', [`s3://AKIA:${SECRET}@nix-cache`])).toThrow(/^--lan "s3:\/\/…@nix-cache": credentials do not go in the URL/);
  });

  it('serve takes s3:// in --lan and --upstream, and names one given as both --lan and --lan-fill', () => {
    const config = resolveServeConfig({ lan: ['s3://nix?endpoint=http://127.0.0.1:9000'], upstream: ['s3://upstream-cache?region=eu-west-1'] });
    expect(config.lan).toEqual(['s3://nix?endpoint=http://127.0.0.1:9000']);
    expect(() => resolveServeConfig({ lan: ['s3://nix?endpoint=http://127.0.0.1:9000'], 'lan-fill': ['s3://nix?region=us-east-1&endpoint=http://127.0.0.1:9000/'] })).toThrow(/given both as --lan and as --lan-fill/);
    expect(() => resolveServeConfig({ upstream: ['s3://BAD'] })).toThrow(/--upstream "s3:\/\/BAD": "BAD" is not a valid bucket name/);
  });

  it('a peer is another machine\'s share, never a bucket: s3:// in --peer or the file\'s peer is refused', () => {
    expect(() => resolveServeConfig({ peer: ['s3://nix?endpoint=http://127.0.0.1:9000'] })).toThrow(/--peer "s3:\/\/nix\?endpoint=http:\/\/127.0.0.1:9000": a peer is another machine's share/);
    const file = JSON.stringify({ peer: ['http://192.168.1.20:37517/', 's3://nix?region=eu-west-1'] });
    expect(() => resolveServeConfig({ config: 'c.json' }, () => file)).toThrow(/not an S3 bucket/);
    expect(resolveServeConfig({ peer: ['http://192.168.1.20:37517/'] }).peer).toEqual(['http://192.168.1.20:37517/']);
  });
});

/** An S3 engine that misbehaves as told, recording what it was sent. */
type Behaviour = 'ok' | '500' | '403' | '404' | 'hang' | 'parts-fail' | 'uploads-listed';
let behaviour: Behaviour = 'ok';
const seen: IncomingMessage[] = [];
let server: Server;
const sockets = new Set<Socket>();
let endpoint: string;

beforeAll(async () => {
  process.env.AWS_ACCESS_KEY_ID = 'AKIDTESTENGINE';
  process.env.AWS_SECRET_ACCESS_KEY = SECRET;
  delete process.env.AWS_PROFILE;
  server = createServer((req: IncomingMessage, res: ServerResponse) => {
    seen.push(req);
    req.resume();
    if (behaviour === 'hang') return;
    if (behaviour === 'uploads-listed') {
      // One live push (its lease names its multipart upload) and an upload nobody holds, both listed by the engine.
      const url = new URL((req.url ?? '/').replace(/^\/lab-cache\/\?/, '/lab-cache?'), 'http://x');
      const xml = (body: string) => res.writeHead(200, { 'content-type': 'application/xml' }).end(`<?xml version="1.0" encoding="UTF-8"?>${body}`);
      const old = new Date(Date.now() - 86_400_000).toISOString();
      if (req.method === 'GET' && url.pathname === '/lab-cache' && url.searchParams.has('uploads')) {
        const upload = (key: string, id: string) => `<Upload><Key>${key}</Key><UploadId>${id}</UploadId><Initiated>${old}</Initiated></Upload>`;
        xml(`<ListMultipartUploadsResult><Bucket>lab-cache</Bucket><IsTruncated>false</IsTruncated>${upload('nar/running', 'up-running')}${upload('nar/dead', 'up-dead')}</ListMultipartUploadsResult>`);
      } else if (req.method === 'GET' && url.pathname === '/lab-cache') {
        const lease = url.searchParams.get('prefix') === 'pushing/' ? `<Contents><Key>pushing/builder-2-1</Key><LastModified>${new Date().toISOString()}</LastModified><Size>200</Size></Contents>` : '';
        xml(`<ListBucketResult><Name>lab-cache</Name><IsTruncated>false</IsTruncated>${lease}</ListBucketResult>`);
      } else if (req.method === 'GET' && url.pathname === '/lab-cache/pushing/builder-2-1') {
        const body = { host: 'builder-2', pid: 1, since: Date.now() - 60_000, written: Date.now(), hashes: [], nars: [], uploads: [{ key: 'nar/running', uploadId: 'up-running' }] };
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      } else if (req.method === 'DELETE') {
        res.writeHead(204).end();
      } else {
        res.writeHead(404, { 'content-type': 'application/xml' }).end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code></Error>');
      }
      return;
    }
    if (behaviour === 'parts-fail') {
      // Starts a multipart upload, fails every part, and accepts the abort.
      if (req.method === 'POST' && req.url?.includes('uploads')) {
        res.writeHead(200, { 'content-type': 'application/xml' });
        res.end('<?xml version="1.0" encoding="UTF-8"?><InitiateMultipartUploadResult><Bucket>lab-cache</Bucket><Key>nar/big</Key><UploadId>upload-1</UploadId></InitiateMultipartUploadResult>');
      } else if (req.method === 'DELETE') {
        res.writeHead(204).end();
      } else {
        res.writeHead(500, { 'content-type': 'application/xml' });
        res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>disk on fire</Message></Error>');
      }
      return;
    }
    if (behaviour === 'ok') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(req.url?.endsWith('nix-cache-info') ? 'StoreDir: /nix/store\n' : '');
      return;
    }
    const status = Number(behaviour);
    res.writeHead(status, { 'content-type': 'application/xml' });
    res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${status === 403 ? 'AccessDenied' : status === 404 ? 'NoSuchKey' : 'InternalError'}</Code><Message>no</Message></Error>`);
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  endpoint = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await new Promise((r) => server.close(r));
});

const log = pino({ level: 'silent' });
const timeouts = { connectMs: 200, firstByteMs: 300, bodyIdleMs: 300, probeIntervalMs: 60_000, maxFails: 1, hedgeMs: 0 };

async function bucketOrigin(): Promise<HttpOrigin> {
  return createOrigin({ url: `s3://lab-cache?endpoint=${endpoint}&region=eu-west-1`, kind: 'lan', timeouts, trusted: TrustedKeys.parse([]), log });
}

describe('the proxy reading a misbehaving bucket (in process)', () => {
  it('signs every request with SigV4 for the bucket, path-style, and never sends the secret', async () => {
    behaviour = 'ok';
    const origin = await bucketOrigin();
    try {
      seen.length = 0;
      const res = await origin.fetchFile('nar/abc-xz', { range: 'bytes=10-' });
      expect(res.status).toBe('present');
      if (res.status === 'present') res.body.resume();
      const req = seen[0]!;
      expect(req.url).toBe('/lab-cache/nar/abc-xz');
      expect(req.headers.authorization).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIDTESTENGINE\/\d{8}\/eu-west-1\/s3\/aws4_request, SignedHeaders=[a-z0-9;-]*range[a-z0-9;-]*, Signature=[0-9a-f]{64}$/);
      expect(req.headers['x-amz-date']).toMatch(/^\d{8}T\d{6}Z$/);
      expect(req.headers.range).toBe('bytes=10-');
      expect(JSON.stringify(req.headers)).not.toContain(SECRET);
      expect(origin.name).toBe(`s3://lab-cache?endpoint=${endpoint}&region=eu-west-1`);
    } finally {
      await origin.close();
    }
  });

  it('a 404 is absent; a 403 and a 5xx are failures that open the circuit; a hang is a timeout', async () => {
    const cases: Array<[Behaviour, string]> = [
      ['404', 'absent'],
      ['403', 'unknown'],
      ['500', 'unknown'],
      ['hang', 'unknown'],
    ];
    for (const [b, expected] of cases) {
      behaviour = b;
      const origin = await bucketOrigin();
      try {
        const started = Date.now();
        const found = await origin.lookupNarInfo('0'.repeat(32));
        expect(found.status, b).toBe(expected);
        if (found.status === 'unknown') {
          expect(origin.breaker.isOpen, b).toBe(true);
          if (b === '403') expect(found.reason).toMatch(/HTTP 403: the bucket refused our signed request/);
          if (b === 'hang') expect(found.cause).toBe('timeout');
        }
        expect(Date.now() - started, b).toBeLessThan(2000);
      } finally {
        await origin.close();
      }
    }
  });
});

describe('credentials with a session token', () => {
  it('sends AWS_SESSION_TOKEN as x-amz-security-token, signed, and never the secret', async () => {
    behaviour = 'ok';
    process.env.AWS_SESSION_TOKEN = 'session-token-of-a-role';
    try {
      const origin = await bucketOrigin();
      try {
        seen.length = 0;
        expect((await origin.lookupNarInfo('0'.repeat(32))).status).not.toBe('unknown');
        const req = seen[0]!;
        expect(req.headers['x-amz-security-token']).toBe('session-token-of-a-role');
        expect(req.headers.authorization).toMatch(/SignedHeaders=[a-z0-9;-]*x-amz-security-token/);
        expect(JSON.stringify(req.headers)).not.toContain(SECRET);
      } finally {
        await origin.close();
      }
    } finally {
      delete process.env.AWS_SESSION_TOKEN;
    }
  });
});

describe('gc on an engine that lists multipart uploads (in process)', () => {
  it("aborts an old upload nobody holds, but not the one a live push's lease names", async () => {
    behaviour = 'uploads-listed';
    const files = new S3Files(new Bucket(parseS3Url(`s3://lab-cache?endpoint=${endpoint}`), { connectMs: 500, idleMs: 2000 }));
    try {
      seen.length = 0;
      expect(await files.removeStale(Date.now(), false)).toEqual(['nar/dead (unfinished multipart upload)']);
      const aborted = seen.filter((r) => r.method === 'DELETE').map((r) => new URL(r.url!, endpoint).searchParams.get('uploadId'));
      expect(aborted).toEqual(['up-dead']);
      // The live lease protects NARs uploaded since its push began, by the bucket's clock.
      const inUse = await files.inUse(Date.now());
      expect(inUse.since).toBeGreaterThan(Date.now() - 3 * 60_000);
      expect(inUse.since).toBeLessThan(Date.now() - 60_000);
    } finally {
      await files.close();
    }
  });
});

describe('push, gc and verify against a misbehaving bucket (in process)', () => {
  it('a 5xx engine, a refusing one and a silent one fail with a message that names the bucket and what to check', async () => {
    const loc = parseS3Url(`s3://lab-cache?endpoint=${endpoint}`);
    const expectations: Array<[Behaviour, RegExp]> = [
      ['500', /^HEAD nix-cache-info in s3:\/\/lab-cache\?endpoint=.* failed: HTTP 500.*the S3 engine failed; try again later$/],
      ['403', /failed: HTTP 403.*check the credentials/],
      ['hang', /HEAD nix-cache-info in s3:\/\/lab-cache.* failed: .*is the endpoint right, and the S3 engine running\?/],
    ];
    for (const [b, message] of expectations) {
      behaviour = b;
      const bucket = new Bucket(loc, { connectMs: 200, idleMs: 300 });
      try {
        const err = await bucket.head('nix-cache-info').then(() => undefined, (e: unknown) => e);
        expect(err, b).toBeInstanceOf(S3Error);
        expect((err as Error).message, b).toMatch(message);
        expect((err as Error).message).not.toContain(SECRET);
      } finally {
        bucket.close();
      }
    }
  });
});

describe('a multipart upload that fails', () => {
  it('is aborted, so no parts are left to be billed, and the error says which part of what failed', async () => {
    behaviour = 'parts-fail';
    const dir = mkdtempSync(join(tmpdir(), 'nlc-s3-upload-'));
    const file = join(dir, 'nar');
    writeFileSync(file, Buffer.alloc(6 * 1024 * 1024, 7));
    const bucket = new Bucket(parseS3Url(`s3://lab-cache?endpoint=${endpoint}`), { connectMs: 500, idleMs: 2000 });
    try {
      seen.length = 0;
      const err = await uploadFile(bucket, 'nar/big', file, 'application/x-nix-nar', 5 * 1024 * 1024).then(() => undefined, (e: unknown) => e);
      expect((err as Error).message).toMatch(/^uploading part 1 of nar\/big in s3:\/\/lab-cache\?endpoint=.* failed: HTTP 500 InternalError/);
      const abort = new URL(seen.find((r) => r.method === 'DELETE')?.url ?? '/', endpoint);
      expect(abort.pathname).toBe('/lab-cache/nar/big');
      expect(abort.searchParams.get('uploadId')).toBe('upload-1');
    } finally {
      bucket.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
