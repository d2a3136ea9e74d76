import { ConfigError } from '../errors.js';

/**
 * A binary cache in an S3 bucket, named as Nix names it:
 * `s3://BUCKET?endpoint=URL&region=R&profile=P&addressing-style=auto|path|virtual`
 * (Nix's src/libstore/s3-url.cc). The bucket is the whole cache; no key prefix.
 */
export interface S3Location {
  bucket: string;
  region: string;
  /** The endpoint as a URL (scheme, host, port, path); AWS's regional endpoint when none is given. */
  endpoint: URL;
  /** True when an endpoint was given (an S3-compatible engine, not AWS). */
  customEndpoint: boolean;
  /** Path-style (`endpoint/BUCKET/key`) or virtual-host style (`BUCKET.host/key`). */
  pathStyle: boolean;
  /** The AWS profile whose credentials are used; undefined: AWS_PROFILE, else `default`. */
  profile: string | undefined;
}

const KNOWN_PARAMS = ['endpoint', 'region', 'profile', 'addressing-style', 'scheme'];
// S3's general-purpose bucket naming rules: 3-63 characters, lower case letters, digits, '.', '-'.
const BUCKET_RE = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const REGION_RE = /^[a-z0-9-]{1,64}$/;
const PROFILE_RE = /^[A-Za-z0-9_.+=@-]{1,128}$/;

export function isS3Url(text: string): boolean {
  return /^s3:\/\//i.test(text);
}

function bad(text: string, why: string): ConfigError {
  // Never echo anything after '@' or a query value that could be a secret: only the bucket part and the reason.
  return new ConfigError(`bad S3 cache URL ${JSON.stringify(redactS3Url(text))}: ${why} (expected s3://BUCKET?endpoint=URL&region=REGION)`);
}

/** The URL with any userinfo removed, for messages. Secrets never belong in the URL; if someone put one there, it is not repeated. */
export function redactS3Url(text: string): string {
  return text.replace(/^(s3:\/\/)[^/?#]*@/i, '$1…@');
}

export function parseS3Url(text: string): S3Location {
  const m = /^s3:\/\/([^/?#]*)(\/[^?#]*)?(?:\?([^#]*))?(#.*)?$/i.exec(text);
  if (!m) throw bad(text, 'not an s3:// URL');
  const [, authority, path, query, fragment] = m;
  if (authority!.includes('@')) throw bad(text, 'credentials do not go in the URL: use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or profile=, or the shared credentials file');
  if (!authority) throw bad(text, 'no bucket name');
  if (!BUCKET_RE.test(authority) || authority.includes('..')) throw bad(text, `${JSON.stringify(authority)} is not a valid bucket name (3-63 lower-case letters, digits, '.' and '-')`);
  if (path && path !== '/') throw bad(text, 'a cache is a whole bucket: no path after the bucket name');
  if (fragment) throw bad(text, 'no #fragment');
  const params = new URLSearchParams(query ?? '');
  const seen = new Set<string>();
  for (const key of params.keys()) {
    if (!KNOWN_PARAMS.includes(key)) throw bad(text, `unknown parameter ${JSON.stringify(key)} (known: ${KNOWN_PARAMS.join(', ')})`);
    if (seen.has(key)) throw bad(text, `parameter ${JSON.stringify(key)} given twice`);
    seen.add(key);
  }
  const region = params.get('region') ?? 'us-east-1';
  if (!REGION_RE.test(region)) throw bad(text, `region ${JSON.stringify(region)} is not a region name`);
  const profile = params.get('profile') ?? undefined;
  if (profile !== undefined && !PROFILE_RE.test(profile)) throw bad(text, `profile ${JSON.stringify(profile)} is not a profile name`);
  const scheme = params.get('scheme') ?? undefined;
  if (scheme !== undefined && scheme !== 'http' && scheme !== 'https') throw bad(text, `scheme must be http or https, got ${JSON.stringify(scheme)}`);
  const style = params.get('addressing-style') ?? 'auto';
  if (!['auto', 'path', 'virtual'].includes(style)) throw bad(text, `addressing-style must be auto, path or virtual, got ${JSON.stringify(style)}`);

  const endpointText = params.get('endpoint') ?? undefined;
  let endpoint: URL;
  if (endpointText === undefined) {
    endpoint = new URL(`${scheme ?? 'https'}://s3.${region}.amazonaws.com/`);
  } else {
    // Nix accepts a bare host[:port] (deprecated) with `scheme=`; a full URL is the form to use.
    const full = endpointText.includes('://') ? endpointText : `${scheme ?? 'https'}://${endpointText}`;
    try {
      endpoint = new URL(full);
    } catch {
      throw bad(text, `endpoint ${JSON.stringify(endpointText)} is not a URL`);
    }
    if (endpoint.protocol !== 'http:' && endpoint.protocol !== 'https:') throw bad(text, `endpoint must be http:// or https://, got ${JSON.stringify(endpoint.protocol)}`);
    if (endpoint.username || endpoint.password) throw bad(text, 'the endpoint must not carry credentials');
    if (endpoint.search || endpoint.hash) throw bad(text, 'the endpoint takes no query or fragment');
    if (!endpoint.pathname.endsWith('/')) endpoint.pathname += '/';
  }
  const custom = endpointText !== undefined;
  // As Nix: virtual-host style by default on AWS, path style on a custom endpoint; a dotted bucket is path style.
  let pathStyle = style === 'path' || (style === 'auto' && (custom || authority.includes('.')));
  if (style === 'virtual') {
    if (authority.includes('.')) throw bad(text, `bucket ${JSON.stringify(authority)} contains a dot, which virtual-host style cannot address over TLS; use addressing-style=path`);
    if (/^\d+\.\d+\.\d+\.\d+$|^\[/.test(endpoint.hostname)) throw bad(text, 'virtual-host style needs an endpoint with a host name, not an IP address');
    pathStyle = false;
  }
  return { bucket: authority, region, endpoint, customEndpoint: custom, pathStyle, profile };
}

/** The http(s) URL of the bucket's root ("directory" of the cache), ending in '/'. */
export function bucketBaseUrl(loc: S3Location): string {
  const u = new URL(loc.endpoint.href);
  if (loc.pathStyle) u.pathname = `${u.pathname}${loc.bucket}/`;
  else u.hostname = `${loc.bucket}.${u.hostname}`;
  return u.href;
}

/** The URL in Nix's syntax, canonical (only what differs from the defaults), for logs and messages. */
export function formatS3Url(loc: S3Location): string {
  const params: string[] = [];
  if (loc.customEndpoint) params.push(`endpoint=${loc.endpoint.href.replace(/\/$/, '')}`);
  if (loc.region !== 'us-east-1' || loc.customEndpoint) params.push(`region=${loc.region}`);
  if (loc.profile) params.push(`profile=${loc.profile}`);
  const defaultPath = loc.customEndpoint || loc.bucket.includes('.');
  if (loc.pathStyle !== defaultPath) params.push(`addressing-style=${loc.pathStyle ? 'path' : 'virtual'}`);
  return `s3://${loc.bucket}${params.length ? `?${params.join('&')}` : ''}`;
}
