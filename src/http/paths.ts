import { NIX32_CHARS } from '../protocol/nix32.js';

/** What a request path under the cache root may be; anything else is a 400 or 404. */
const H = `[${NIX32_CHARS}]{32}`;
export const NARINFO_RE = new RegExp(`^(${H})\\.narinfo$`);
export const LS_RE = new RegExp(`^(${H})\\.ls$`);
export const LOG_RE = new RegExp(`^${H}-[A-Za-z0-9+\\-._?=]{1,211}$`);
export const REALISATION_RE = new RegExp(`^sha256:[${NIX32_CHARS}]{52}![A-Za-z0-9+\\-._?=]{1,211}\\.doi$`);
export const DEBUGINFO_RE = /^[0-9a-f]{8,128}$/;

export const MAX_URL_LENGTH = 1024;

/** True for `..` or `.` segments, raw or percent-encoded, anywhere in the path. */
export function hasDotSegment(url: string): boolean {
  const path = url.split('?')[0]!;
  let decoded: string;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    return true; // malformed percent-encoding: refuse rather than guess
  }
  return decoded.split('/').some((seg) => seg === '..' || seg === '.') || decoded.includes('\\');
}
