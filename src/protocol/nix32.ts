// Nix's own base-32: a custom alphabet (no e, o, u, t) and bytes read from the end.
const ALPHABET = '0123456789abcdfghijklmnpqrsvwxyz';
/** Char codes of the alphabet, and each ASCII code's digit (-1: not a digit): a hash is read and written per path, twice. */
const CODES = Uint8Array.from(ALPHABET, (c) => c.charCodeAt(0));
const INDEX = new Int8Array(128).fill(-1);
CODES.forEach((code, i) => (INDEX[code] = i));

export const NIX32_CHARS = ALPHABET;

export function nix32Length(byteLength: number): number {
  return Math.ceil((byteLength * 8) / 5);
}

export function encodeNix32(bytes: Uint8Array): string {
  const len = nix32Length(bytes.length);
  const out = new Array<number>(len);
  for (let n = len - 1, k = 0; n >= 0; n--, k++) {
    const b = n * 5;
    const i = b >> 3;
    const j = b & 7;
    const lo = bytes[i]! >> j;
    const hi = i + 1 < bytes.length ? bytes[i + 1]! << (8 - j) : 0;
    out[k] = CODES[(lo | hi) & 0x1f]!;
  }
  return String.fromCharCode(...out);
}

/** Returns undefined for text that is not valid nix32 of the expected size. */
export function decodeNix32(text: string, byteLength: number): Uint8Array | undefined {
  if (text.length !== nix32Length(byteLength)) return undefined;
  const out = new Uint8Array(byteLength);
  for (let n = 0; n < text.length; n++) {
    const code = text.charCodeAt(text.length - n - 1);
    const digit = code < 128 ? INDEX[code]! : -1;
    if (digit < 0) return undefined;
    const b = n * 5;
    const i = b >> 3;
    const j = b & 7;
    out[i]! |= (digit << j) & 0xff;
    const carry = digit >> (8 - j);
    if (i + 1 < byteLength) out[i + 1]! |= carry;
    else if (carry !== 0) return undefined; // bits beyond the hash: not a canonical encoding
  }
  return out;
}
