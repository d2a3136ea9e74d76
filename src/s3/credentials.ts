import { errorMessage } from '../errors.js';
import { formatS3Url, type S3Location } from './url.js';

/** What signs requests: never logged, never put in an error message. */
export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  expiration?: Date;
}

export type CredentialSource = () => Promise<S3Credentials>;

/** No credentials could be found or loaded for a bucket; the message says where they were looked for. */
export class S3CredentialsError extends Error {
  override name = 'S3CredentialsError';
}

/** Refresh temporary credentials this long before they expire. */
const REFRESH_BEFORE_MS = 5 * 60_000;

/**
 * Credentials as the AWS tools read them (the JavaScript SDK's order): with
 * a profile (`profile=` in the URL, else AWS_PROFILE) that profile of the
 * shared files (~/.aws/credentials and ~/.aws/config, or
 * AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE; static keys, assume-role,
 * credential_process, SSO); without one, AWS_ACCESS_KEY_ID /
 * AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, then the `default` profile.
 * Instance metadata (IMDS) is not asked: it would send requests to a
 * link-local address from every laptop. The SDK's providers are loaded only
 * when an s3:// cache is configured. The result is cached and renewed
 * before temporary credentials expire.
 */
export function credentialSource(loc: S3Location): CredentialSource {
  const profile = loc.profile ?? process.env.AWS_PROFILE;
  const resolve = async (): Promise<S3Credentials> => {
    const tried: string[] = [];
    if (!profile) {
      const { fromEnv } = await import('@aws-sdk/credential-provider-env');
      try {
        return await fromEnv()();
      } catch {
        tried.push('AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are not both set');
      }
    }
    const { fromIni } = await import('@aws-sdk/credential-provider-ini');
    try {
      return await fromIni(profile ? { profile } : {})();
    } catch (err) {
      // The SDK's messages name profiles and files, never secrets.
      tried.push(`profile ${JSON.stringify(profile ?? 'default')}: ${errorMessage(err).split('\n')[0]}`);
    }
    throw new S3CredentialsError(
      `no AWS credentials for ${formatS3Url(loc)} (${tried.join('; ')}): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, ` +
        'or a profile (AWS_PROFILE or profile= in the URL) in the shared credentials file (~/.aws/credentials, or AWS_SHARED_CREDENTIALS_FILE)',
    );
  };
  let cached: Promise<S3Credentials> | undefined;
  return () => {
    const fresh = (c: S3Credentials) => !c.expiration || c.expiration.getTime() - Date.now() > REFRESH_BEFORE_MS;
    if (cached) {
      return cached.then((c) => {
        if (fresh(c)) return c;
        cached = resolve();
        return cached;
      });
    }
    cached = resolve();
    cached.catch(() => (cached = undefined)); // a failure is retried on the next request, not remembered
    return cached;
  };
}
