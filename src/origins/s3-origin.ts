import { ConfigError, errorMessage } from '../errors.js';
import { isS3Url } from '../s3/url.js';
import { HttpOrigin, type HttpOriginOptions } from './http-origin.js';

/**
 * An origin for a cache URL: `http(s)://…` as it is, or an S3 bucket
 * (`s3://BUCKET?endpoint=URL&region=R`) as an HttpOrigin whose requests are
 * signed (SigV4) for the bucket's path-style or virtual-host URL: the same
 * timeouts, breaker, checked redirects, Range, signature checks and stats as
 * any origin. The S3 code (and the AWS SDK's signer) is loaded only for an
 * s3:// URL. Credentials are read now: none is a ConfigError at start,
 * while an unreachable bucket is not (a laptop away from the lab starts).
 */
export async function createOrigin(options: HttpOriginOptions): Promise<HttpOrigin> {
  if (!isS3Url(options.url)) return new HttpOrigin(options);
  const [{ parseS3Url, bucketBaseUrl, formatS3Url }, { credentialSource }, { createSigner }] = await Promise.all([
    import('../s3/url.js'),
    import('../s3/credentials.js'),
    import('../s3/signer.js'),
  ]);
  const loc = parseS3Url(options.url);
  const credentials = credentialSource(loc);
  try {
    await credentials();
  } catch (err) {
    throw new ConfigError(errorMessage(err));
  }
  const signer = await createSigner(loc, credentials);
  return new HttpOrigin({ ...options, url: bucketBaseUrl(loc), name: options.name ?? formatS3Url(loc), signer });
}
