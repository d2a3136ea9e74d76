import { PassThrough } from 'node:stream';
import * as zlib from 'node:zlib';
import { createDecompressor, DecompressError, spawnFilter, zlibFilter, type Decompressor } from './decompress.js';

/**
 * Compressors for the compressions a narinfo names, at fast settings: the
 * output is read once, by one Nix, and only on the legacy path (nar/legacy.ts).
 */
const SPAWNED: Record<string, [string, ...string[]]> = {
  xz: ['xz', '-zc', '-1', '-T1'],
  bzip2: ['bzip2', '-zc', '-1'],
};

function createCompressor(compression: string): Decompressor | undefined {
  if (compression === 'none') {
    const pass = new PassThrough();
    return { input: pass, output: pass, destroy: () => pass.destroy() };
  }
  if (compression === 'zstd') return zlibFilter(() => zlib.createZstdCompress({ params: { [zlib.constants.ZSTD_c_compressionLevel]: 3 } }), 'zstd');
  if (compression === 'br') return zlibFilter(() => zlib.createBrotliCompress({ params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 4 } }), 'br');
  const cmd = Object.hasOwn(SPAWNED, compression) ? SPAWNED[compression] : undefined;
  return cmd ? spawnFilter(cmd) : undefined;
}

/**
 * One origin's NAR file (`from`) as a file of another compression (`to`):
 * for a narinfo Nix cached that promised `to` when no origin still holds a
 * file in it. Nix 2.8 to 2.21 sniff the compression of what they get; from
 * 2.22 on Nix decodes with the filter the narinfo names only, so zstd bytes
 * under `Compression: xz` fail with "input compression not recognized".
 * undefined when the proxy can read or write neither. Either side failing
 * destroys `output` with a DecompressError.
 */
export function createTranscoder(from: string, to: string, fileSize?: number, narSize?: number): Decompressor | undefined {
  const dec = createDecompressor(from, fileSize, narSize);
  if (!dec) return undefined;
  const comp = createCompressor(to);
  if (!comp) {
    dec.destroy();
    return undefined;
  }
  const out = new PassThrough();
  const fail = (err: Error) => {
    out.destroy(err instanceof DecompressError ? err : new DecompressError(err.message));
    dec.destroy();
    comp.destroy();
  };
  dec.output.on('error', fail);
  comp.output.on('error', fail);
  dec.output.pipe(comp.input);
  comp.input.on('error', () => {}); // a compressor that died reports through its output
  comp.output.pipe(out);
  return {
    input: dec.input,
    output: out,
    destroy: () => {
      dec.destroy();
      comp.destroy();
      out.destroy();
    },
  };
}
