import { decodeNix32, encodeNix32 } from './nix32.js';

/** A sha256 as Nix writes it in narinfos: `sha256:<52 nix32 chars>`. */
export type Sha256 = string & { readonly __sha256: unique symbol };

const SHA256_BYTES = 32;

/**
 * Accepts the forms Nix writes (`sha256:` + nix32, base16 or base64, and SRI
 * `sha256-<base64>`) and returns the canonical nix32 form used in fingerprints.
 */
export function parseSha256(text: string): Sha256 | undefined {
  let body: string;
  let sri = false;
  if (text.startsWith('sha256:')) body = text.slice(7);
  else if (text.startsWith('sha256-')) {
    body = text.slice(7);
    sri = true;
  } else return undefined;
  let bytes: Uint8Array | undefined;
  // Nix's own form: valid nix32 of 32 bytes (no bits beyond them) is already canonical.
  if (!sri && body.length === 52) return decodeNix32(body, SHA256_BYTES) ? (text as Sha256) : undefined;
  if (!sri && /^[0-9a-f]{64}$/.test(body)) bytes = Buffer.from(body, 'hex');
  else if (/^[A-Za-z0-9+/]{43}=$/.test(body)) bytes = Buffer.from(body, 'base64');
  if (!bytes || bytes.length !== SHA256_BYTES) return undefined;
  return sha256FromBytes(bytes);
}

export function sha256FromBytes(bytes: Uint8Array): Sha256 {
  return `sha256:${encodeNix32(bytes)}` as Sha256;
}

/** The 52 nix32 characters of a canonical sha256. */
export function sha256Digits(hash: Sha256): string {
  return hash.slice(7);
}
