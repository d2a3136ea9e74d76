import { parseSha256, type Sha256 } from './hash.js';
import { parseStorePath, parseStorePathBaseName, STORE_DIR, type StorePath } from './storepath.js';

/** A parsed `.narinfo`. Fields Nix may add later are kept in `extra`, in order. */
export interface NarInfo {
  storePath: string;
  path: StorePath;
  url: string;
  compression: string;
  fileHash?: Sha256;
  fileSize?: number;
  narHash: Sha256;
  narSize: number;
  references: string[];
  deriver?: string;
  system?: string;
  ca?: string;
  sigs: string[];
  extra: Array<[string, string]>;
}

export class NarInfoError extends Error {
  override name = 'NarInfoError';
}

const MAX_NARINFO_BYTES = 1 << 20;

function parseSize(field: string, value: string): number {
  if (!/^\d{1,16}$/.test(value)) throw new NarInfoError(`${field} is not a size: ${JSON.stringify(value)}`);
  return Number(value);
}

function parseHashField(field: string, value: string): Sha256 {
  const hash = parseSha256(value);
  if (!hash) throw new NarInfoError(`${field} is not a sha256 hash: ${JSON.stringify(value)}`);
  return hash;
}

/** Parses narinfo text strictly: anything Nix would reject is an error here too. */
export function parseNarInfo(text: string): NarInfo {
  if (text.length > MAX_NARINFO_BYTES) throw new NarInfoError('narinfo is too large');
  const fields: Partial<NarInfo> & { sigs: string[]; extra: Array<[string, string]>; references: string[] } = {
    sigs: [],
    extra: [],
    references: [],
  };
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const colon = line.indexOf(': ');
    if (colon <= 0) throw new NarInfoError(`malformed narinfo line: ${JSON.stringify(line.slice(0, 80))}`);
    const key = line.slice(0, colon);
    const value = line.slice(colon + 2);
    switch (key) {
      case 'StorePath': {
        const path = parseStorePath(value);
        if (!path) throw new NarInfoError(`StorePath is not a store path: ${JSON.stringify(value)}`);
        fields.storePath = value;
        fields.path = path;
        break;
      }
      case 'URL':
        if (value === '') throw new NarInfoError('URL is empty');
        fields.url = value;
        break;
      case 'Compression':
        fields.compression = value;
        break;
      case 'FileHash':
        fields.fileHash = parseHashField(key, value);
        break;
      case 'FileSize':
        fields.fileSize = parseSize(key, value);
        break;
      case 'NarHash':
        fields.narHash = parseHashField(key, value);
        break;
      case 'NarSize':
        fields.narSize = parseSize(key, value);
        break;
      case 'References':
        for (const ref of value.split(' ')) {
          if (ref === '') continue;
          if (!parseStorePathBaseName(ref)) throw new NarInfoError(`bad reference: ${JSON.stringify(ref)}`);
          fields.references.push(ref);
        }
        break;
      case 'Deriver':
        if (value !== 'unknown-deriver') fields.deriver = value;
        break;
      case 'System':
        fields.system = value;
        break;
      case 'CA':
        fields.ca = value;
        break;
      case 'Sig':
        fields.sigs.push(value);
        break;
      default:
        fields.extra.push([key, value]);
    }
  }
  for (const required of ['storePath', 'url', 'narHash', 'narSize'] as const) {
    if (fields[required] === undefined) throw new NarInfoError(`narinfo lacks ${required}`);
  }
  // Nix's default when the field is missing.
  fields.compression ??= 'bzip2';
  return fields as NarInfo;
}

/** Serialises in the order Nix writes narinfos. */
export function serialiseNarInfo(info: NarInfo): string {
  const lines: string[] = [`StorePath: ${info.storePath}`, `URL: ${info.url}`, `Compression: ${info.compression}`];
  if (info.fileHash) lines.push(`FileHash: ${info.fileHash}`);
  if (info.fileSize !== undefined) lines.push(`FileSize: ${info.fileSize}`);
  lines.push(`NarHash: ${info.narHash}`, `NarSize: ${info.narSize}`, `References: ${info.references.join(' ')}`);
  if (info.deriver) lines.push(`Deriver: ${info.deriver}`);
  if (info.system) lines.push(`System: ${info.system}`);
  for (const sig of info.sigs) lines.push(`Sig: ${sig}`);
  if (info.ca) lines.push(`CA: ${info.ca}`);
  for (const [key, value] of info.extra) lines.push(`${key}: ${value}`);
  return lines.join('\n') + '\n';
}

/** What a narinfo signature covers; the URL and compression are not part of it. */
export function fingerprint(info: Pick<NarInfo, 'storePath' | 'narHash' | 'narSize' | 'references'>): string {
  const refs = info.references.map((r) => `${STORE_DIR}/${r}`).join(',');
  return `1;${info.storePath};${info.narHash};${info.narSize};${refs}`;
}
