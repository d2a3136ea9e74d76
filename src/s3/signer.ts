import type { CredentialSource } from './credentials.js';
import type { S3Location } from './url.js';

/** Adds AWS Signature V4 headers to one request; the caller sends exactly the method, URL and headers it signed. */
export type RequestSigner = (req: { method: string; url: URL; headers: Record<string, string> }) => Promise<Record<string, string>>;

/**
 * A SigV4 signer for GET/HEAD requests to a bucket, from the AWS SDK's own
 * `@smithy/signature-v4` (loaded here, lazily: the proxy loads it only when
 * an s3:// cache is configured; docs/dependencies.md). The payload is empty
 * for these methods; `UNSIGNED-PAYLOAD` is what S3 expects for a GET.
 */
export async function createSigner(loc: S3Location, credentials: CredentialSource): Promise<RequestSigner> {
  const [{ SignatureV4 }, { Hash }] = await Promise.all([import('@smithy/signature-v4'), import('@smithy/hash-node')]);
  const signer = new SignatureV4({
    service: 's3',
    region: loc.region,
    credentials,
    sha256: Hash.bind(null, 'sha256'),
    uriEscapePath: false,
    applyChecksum: false,
  });
  return async ({ method, url, headers }) => {
    const query: Record<string, string> = {};
    for (const [k, v] of url.searchParams) query[k] = v;
    const signed = await signer.sign({
      method,
      protocol: url.protocol,
      hostname: url.hostname,
      ...(url.port ? { port: Number(url.port) } : {}),
      path: url.pathname,
      query,
      headers: { ...headers, host: url.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' },
    });
    return signed.headers as Record<string, string>;
  };
}
