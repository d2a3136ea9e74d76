import { accessSync, constants, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { errorMessage } from '../errors.js';
import { parseSha256, type Sha256 } from '../protocol/hash.js';
import { parseStorePath, STORE_DIR, type StorePath } from '../protocol/storepath.js';

/** What the store's database says about one valid path, in narinfo terms (references as base names, sorted). */
export interface StorePathInfo {
  storePath: string;
  path: StorePath;
  narHash: Sha256;
  narSize: number;
  references: string[];
  ca?: string;
  /** Signatures as stored (`name:base64`), unchecked. */
  sigs: string[];
}

/** The store's database cannot be read (missing, another schema, locked): the share answers 503, doctor says why. */
export class StoreError extends Error {
  override name = 'StoreError';
}

/** The database schema this reader knows (Nix 2.0 to 2.34 and Lix write 10: ValidPaths, Refs). */
export const SCHEMA_VERSION = '10';
/** How long a read-only connection is kept when this process could not write the database's -shm file. */
const REOPEN_MS = 1000;

type Row = { id: number; path: string; hash: string; narSize: number | bigint | null; sigs: string | null; ca: string | null };

/**
 * A Nix store read from its own SQLite database (`nix/var/nix/db/db.sqlite`
 * under `root`, read-only, with Node's built-in node:sqlite), the way Nix's
 * queryPathFromHashPart looks a store hash up: `path >= '/nix/store/<hash>'`.
 * One indexed read per lookup, microseconds; a `nix path-info` process per
 * narinfo cost ~30 ms of CPU here (docs/sharing.md).
 *
 * `root` is what Nix's `--store DIR` means: `/` for the system store, or a
 * chroot store's directory; store paths are `/nix/store/…` in both, their
 * files under `root/nix/store`.
 *
 * Reading: a process that may write the database's directory (root, or the
 * store's owner) keeps one connection: SQLite's WAL lets it read while Nix
 * writes. Another user (the NixOS service's DynamicUser) can open a WAL
 * database read-only only while Nix has it open (its `-shm` file exists);
 * otherwise the database is read as `immutable` (Nix has nothing uncommitted
 * then). Such connections are reopened every second, so new paths show up.
 */
export class LocalStore {
  readonly root: string;
  readonly dbPath: string;
  /** Where the files of `/nix/store/X` are: `root/nix/store/X`. */
  readonly storeDir: string;
  private db: DatabaseSync | undefined;
  private byHash: StatementSync | undefined;
  private refs: StatementSync | undefined;
  private openedAt = 0;
  private readonly ownsDir: boolean;

  constructor(root: string) {
    this.root = root;
    this.dbPath = join(root, 'nix/var/nix/db/db.sqlite');
    this.storeDir = join(root, 'nix/store');
    this.ownsDir = canWrite(join(root, 'nix/var/nix/db'));
  }

  /** Checks the database is there and has the schema this reader knows; throws a StoreError saying what is wrong. */
  check(): void {
    let schema: string;
    try {
      schema = readFileSync(join(this.root, 'nix/var/nix/db/schema'), 'utf8').trim();
    } catch (err) {
      throw new StoreError(`${this.root} is not a Nix store (cannot read nix/var/nix/db/schema: ${errorMessage(err)})`);
    }
    if (schema !== SCHEMA_VERSION) throw new StoreError(`the Nix database in ${this.root} has schema ${JSON.stringify(schema)}; this version reads schema ${SCHEMA_VERSION}`);
    this.connection();
  }

  /**
   * The valid path whose hash part is `storeHash`, if any: its signatures at
   * once (one indexed read), the rest (references: another read) when asked,
   * so the share can answer 404 for an unsigned path after the same work as
   * for a path it does not have.
   */
  lookup(storeHash: string): { sigs: string[]; info(): StorePathInfo | undefined } | undefined {
    const prefix = `${STORE_DIR}/${storeHash}`;
    const row = this.read(() => this.byHash!.get(prefix) as Row | undefined);
    if (!row || !row.path.startsWith(`${prefix}-`)) return undefined;
    return { sigs: splitSigs(row.sigs), info: () => this.info(row) };
  }

  /** Every valid path (for `doctor`'s count of what would be shared). */
  *all(): Generator<StorePathInfo> {
    const db = this.connection();
    const rows = db.prepare('SELECT id, path, hash, narSize, sigs, ca FROM ValidPaths').iterate() as IterableIterator<Row>;
    for (const row of rows) {
      const info = this.info(row);
      if (info) yield info;
    }
  }

  close(): void {
    this.db?.close();
    this.db = undefined;
  }

  private info(row: Row): StorePathInfo | undefined {
    const path = parseStorePath(row.path);
    const narHash = parseSha256(row.hash);
    if (!path || !narHash || row.narSize === null) return undefined; // a row Nix itself would not serve
    const references = (this.read(() => this.refs!.all(row.id)) as Array<{ path: string }>)
      .map((r) => r.path.slice(STORE_DIR.length + 1))
      .sort();
    const info: StorePathInfo = { storePath: row.path, path, narHash, narSize: Number(row.narSize), references, sigs: splitSigs(row.sigs) };
    if (row.ca) info.ca = row.ca;
    return info;
  }

  private read<T>(f: () => T): T {
    this.connection();
    try {
      return f();
    } catch (err) {
      // A connection that failed once is not trusted again: the next read opens a new one.
      this.close();
      throw new StoreError(`reading the Nix database ${this.dbPath} failed: ${errorMessage(err)}`);
    }
  }

  private connection(): DatabaseSync {
    if (this.db && (this.ownsDir || Date.now() - this.openedAt < REOPEN_MS)) return this.db;
    this.close();
    let db: DatabaseSync;
    try {
      db = new DatabaseSync(this.dbPath, { readOnly: true });
      db.prepare('SELECT 1 FROM ValidPaths LIMIT 1').get(); // SQLite opens lazily: make it fail here
    } catch (err) {
      // SQLITE_READONLY_CANTINIT: a WAL database nobody has open, and we may not create its -shm file.
      if ((err as { errcode?: unknown }).errcode !== 1544) throw new StoreError(`cannot open the Nix database ${this.dbPath}: ${errorMessage(err)}`);
      const url = pathToFileURL(this.dbPath);
      url.searchParams.set('immutable', '1');
      try {
        db = new DatabaseSync(url, { readOnly: true });
      } catch (err2) {
        throw new StoreError(`cannot open the Nix database ${this.dbPath}: ${errorMessage(err2)}`);
      }
    }
    this.db = db;
    this.openedAt = Date.now();
    this.byHash = db.prepare('SELECT id, path, hash, narSize, sigs, ca FROM ValidPaths WHERE path >= ? ORDER BY path LIMIT 1');
    this.refs = db.prepare('SELECT v.path AS path FROM Refs r JOIN ValidPaths v ON v.id = r.reference WHERE r.referrer = ?');
    return db;
  }
}

function splitSigs(text: string | null): string[] {
  return (text ?? '').split(' ').filter(Boolean);
}

function canWrite(dir: string): boolean {
  try {
    accessSync(dir, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}
