import { createHash } from 'node:crypto';

/** A cache's base URL in one canonical form (http or https, no query or fragment, ending in `/`). */
export function normaliseBaseUrl(url: string): string {
  const parsed = new URL(url);
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new Error(`cache URL must be http, https or s3 (s3://BUCKET?endpoint=URL&region=R), got ${url}`);
  }
  parsed.search = '';
  parsed.hash = '';
  if (!parsed.pathname.endsWith('/')) parsed.pathname += '/';
  return parsed.toString();
}

export function originId(baseUrl: string): string {
  return createHash('sha256').update(baseUrl).digest('hex').slice(0, 10);
}
