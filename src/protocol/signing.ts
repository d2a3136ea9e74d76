import { createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { fingerprint, type NarInfo } from './narinfo.js';

// DER prefixes that wrap a raw Ed25519 key so node:crypto can import it.
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

export class KeyError extends Error {
  override name = 'KeyError';
}

export interface PublicKey {
  name: string;
  key: KeyObject;
  /** `name:base64`, as in nix.conf. */
  text: string;
}

export interface SecretKey {
  name: string;
  key: KeyObject;
  publicKey: PublicKey;
}

function splitKey(text: string, what: string): [string, Buffer] {
  const trimmed = text.trim();
  const colon = trimmed.indexOf(':');
  if (colon <= 0) throw new KeyError(`${what} must look like NAME:BASE64, got ${JSON.stringify(trimmed.slice(0, 40))}`);
  const name = trimmed.slice(0, colon);
  const body = trimmed.slice(colon + 1);
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(body)) throw new KeyError(`${what} ${JSON.stringify(name)} is not base64`);
  return [name, Buffer.from(body, 'base64')];
}

export function parsePublicKey(text: string): PublicKey {
  const [name, raw] = splitKey(text, 'public key');
  if (raw.length !== 32) throw new KeyError(`public key ${JSON.stringify(name)} has ${raw.length} bytes, expected 32`);
  const key = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
  return { name, key, text: `${name}:${raw.toString('base64')}` };
}

/** Parses a Nix secret key file's content (`name:base64` of 64 bytes: seed then public key). */
export function parseSecretKey(text: string): SecretKey {
  const [name, raw] = splitKey(text, 'secret key');
  if (raw.length !== 64) throw new KeyError(`secret key ${JSON.stringify(name)} has ${raw.length} bytes, expected 64`);
  const key = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, raw.subarray(0, 32)]), format: 'der', type: 'pkcs8' });
  const publicKey = parsePublicKey(`${name}:${raw.subarray(32).toString('base64')}`);
  // A key file whose halves don't match would sign with one key and claim another.
  const probe = Buffer.from('nix-lan-cache key check');
  if (!verify(null, probe, publicKey.key, sign(null, probe, key))) {
    throw new KeyError(`secret key ${JSON.stringify(name)}: its public half does not match its private half`);
  }
  return { name, key, publicKey };
}

/** The key name a signature (`name:base64`) claims; '' for one without a name. */
export function sigKeyName(sig: string): string {
  return sig.slice(0, Math.max(0, sig.indexOf(':')));
}

export function signFingerprint(fp: string, secret: SecretKey): string {
  return `${secret.name}:${sign(null, Buffer.from(fp), secret.key).toString('base64')}`;
}

/** Adds a signature by `secret`, replacing an older one by the same key name. */
export function signNarInfo(info: NarInfo, secret: SecretKey): NarInfo {
  const sig = signFingerprint(fingerprint(info), secret);
  return { ...info, sigs: [...info.sigs.filter((s) => !s.startsWith(`${secret.name}:`)), sig] };
}

/** A set of trusted keys, looked up by name as Nix does. */
export class TrustedKeys {
  private readonly byName = new Map<string, PublicKey[]>();

  constructor(keys: Iterable<PublicKey>) {
    for (const key of keys) {
      const list = this.byName.get(key.name) ?? [];
      if (!list.some((k) => k.text === key.text)) list.push(key);
      this.byName.set(key.name, list);
    }
  }

  static parse(texts: Iterable<string>): TrustedKeys {
    return new TrustedKeys([...texts].map(parsePublicKey));
  }

  get names(): string[] {
    return [...this.byName.keys()];
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  /** The name of the first trusted key with a valid signature on `info`, if any. */
  verify(info: NarInfo): string | undefined {
    for (const c of this.candidates(info)) if (verify(null, c.fp, c.key.key, c.raw)) return c.key.name;
    return undefined;
  }

  /**
   * The same, with each Ed25519 check on libuv's threadpool (Node's
   * callback form of crypto.verify): the check is most of the CPU a narinfo
   * costs the proxy, and this keeps it off the thread that answers Nix.
   */
  async verifyAsync(info: NarInfo): Promise<string | undefined> {
    for (const c of this.candidates(info)) {
      const ok = await new Promise<boolean>((resolve, reject) => verify(null, c.fp, c.key.key, c.raw, (err, valid) => (err ? reject(err) : resolve(valid))));
      if (ok) return c.key.name;
    }
    return undefined;
  }

  /** Each (signature, trusted key of its name) pair worth checking, in the narinfo's order. */
  private *candidates(info: NarInfo): Generator<{ fp: Buffer; key: PublicKey; raw: Buffer }> {
    const fp = Buffer.from(fingerprint(info));
    for (const sig of info.sigs) {
      const colon = sig.indexOf(':');
      if (colon <= 0) continue;
      const keys = this.byName.get(sig.slice(0, colon));
      if (!keys) continue;
      const raw = Buffer.from(sig.slice(colon + 1), 'base64');
      if (raw.length !== 64) continue;
      for (const key of keys) yield { fp, key, raw };
    }
  }
}
