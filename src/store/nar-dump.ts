import { constants } from 'node:fs';
import { lstat, open, readdir, readlink } from 'node:fs/promises';

/**
 * The NAR serialisation of a file tree (what `nix-store --dump` writes), read
 * from the file system and streamed in chunks of about `CHUNK` bytes. Never
 * follows a symlink: one is written as a symlink (lstat, O_NOFOLLOW), so
 * nothing outside the tree is read. Entries are sorted by their bytes, as
 * Nix sorts them. The caller checks the result against the NarHash it
 * expects: a tree that changes while it is read can only make the hash
 * differ, never pass.
 *
 * In process rather than `nix-store --dump`: a process per NAR cost ~20 ms
 * of CPU here, a closure's worth of seconds (docs/sharing.md).
 */
const CHUNK = 64 * 1024;
/** Files up to this size are read in one go; larger ones in CHUNK reads. */
const SMALL_FILE = 256 * 1024;
/** Deeper trees than this are not real store paths (Nix itself has no limit; this keeps the recursion bounded). */
const MAX_DEPTH = 256;

export class NarDumpError extends Error {
  override name = 'NarDumpError';
}

export async function* dumpNar(path: string): AsyncGenerator<Buffer> {
  const out = new Collector();
  yield* out.add(str('nix-archive-1'));
  // Paths as bytes all the way down: a name inside a store path need not be UTF-8.
  yield* node(Buffer.from(path), out, 0);
  const last = out.flush();
  if (last) yield last;
}

async function* node(path: Buffer, out: Collector, depth: number): AsyncGenerator<Buffer> {
  if (depth > MAX_DEPTH) throw new NarDumpError(`${path.toString()}: nested deeper than ${MAX_DEPTH} directories`);
  const st = await lstat(path);
  yield* out.add(str('('));
  if (st.isSymbolicLink()) {
    yield* out.add(str('type'), str('symlink'), str('target'), str(await readlink(path, { encoding: 'buffer' })));
  } else if (st.isFile()) {
    yield* out.add(str('type'), str('regular'));
    if (st.mode & 0o100) yield* out.add(str('executable'), str(''));
    yield* out.add(str('contents'));
    yield* file(path, st.size, out);
  } else if (st.isDirectory()) {
    yield* out.add(str('type'), str('directory'));
    const names = (await readdir(path, { encoding: 'buffer' })).sort(Buffer.compare);
    for (const name of names) {
      yield* out.add(str('entry'), str('('), str('name'), str(name), str('node'));
      yield* node(Buffer.concat([path, SLASH, name]), out, depth + 1);
      yield* out.add(str(')'));
    }
  } else {
    throw new NarDumpError(`${path.toString()}: not a regular file, directory or symlink`);
  }
  yield* out.add(str(')'));
}

/** A regular file's contents: its size, its bytes (exactly `size` of them), padding. */
async function* file(path: Buffer, size: number, out: Collector): AsyncGenerator<Buffer> {
  yield* out.add(u64(size));
  const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    let done = 0;
    while (done < size) {
      const want = size - done <= SMALL_FILE ? size - done : CHUNK;
      const buf = Buffer.allocUnsafe(want);
      let got = 0;
      while (got < want) {
        const { bytesRead } = await fh.read(buf, got, want - got, done + got);
        if (bytesRead === 0) throw new NarDumpError(`${path.toString()}: shorter than its size (${size} bytes) while being read`);
        got += bytesRead;
      }
      done += want;
      yield* out.add(buf);
    }
  } finally {
    await fh.close();
  }
  yield* out.add(padding(size));
}

const ZEROS = Buffer.alloc(8);
const SLASH = Buffer.from('/');

function padding(length: number): Buffer {
  return ZEROS.subarray(0, (8 - (length % 8)) % 8);
}

function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

/** A NAR string: its length, its bytes, padding to 8. */
function str(s: string | Buffer): Buffer {
  const bytes = typeof s === 'string' ? Buffer.from(s) : s;
  return Buffer.concat([u64(bytes.length), bytes, padding(bytes.length)]);
}

/** Gathers the many small pieces of a NAR into chunks of about CHUNK bytes. */
class Collector {
  private parts: Buffer[] = [];
  private size = 0;

  *add(...bufs: Buffer[]): Generator<Buffer> {
    for (const b of bufs) {
      if (b.length >= CHUNK) {
        const pending = this.flush();
        if (pending) yield pending;
        yield b;
        continue;
      }
      this.parts.push(b);
      this.size += b.length;
      if (this.size >= CHUNK) yield this.flush()!;
    }
  }

  flush(): Buffer | undefined {
    if (this.size === 0) return undefined;
    const out = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.size);
    this.parts = [];
    this.size = 0;
    return out;
  }
}
