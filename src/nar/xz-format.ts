import { crc32 } from 'node:zlib';

/**
 * A whole .xz stream (one block, no integrity check) that decodes to exactly
 * `data`, stored in LZMA2's uncompressed chunks: no encoder needed. The xz
 * process (nar/xz-process.ts) writes one after every file, with a random
 * `data` only it knows, to find where each file's output ends.
 * Format: https://tukaani.org/xz/xz-file-format.txt (sections 2 and 3).
 */
export function storedXzStream(data: Buffer): Buffer {
  if (data.length === 0 || data.length > 0x10000) throw new RangeError('storedXzStream: 1 to 65536 bytes');
  const flags = Buffer.from([0x00, 0x00]); // check type: none
  const header = Buffer.concat([Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), flags, u32(crc32(flags))]);
  // Block header: size ((12 / 4) - 1), flags (one filter, no sizes), LZMA2 (0x21) with one property byte (4 KiB dictionary), padding, CRC32.
  const blockHead = Buffer.from([0x02, 0x00, 0x21, 0x01, 0x00, 0x00, 0x00, 0x00]);
  const blockHeader = Buffer.concat([blockHead, u32(crc32(blockHead))]);
  // One uncompressed chunk with a dictionary reset (control 0x01, size - 1 big-endian), then LZMA2's end marker.
  const chunk = Buffer.concat([Buffer.from([0x01, (data.length - 1) >> 8, (data.length - 1) & 0xff]), data, Buffer.from([0x00])]);
  const block = Buffer.concat([blockHeader, chunk, Buffer.alloc(pad4(chunk.length))]);
  // Index: indicator, one record (unpadded size, uncompressed size), padding, CRC32.
  const indexBody = Buffer.concat([Buffer.from([0x00]), varint(1), varint(blockHeader.length + chunk.length), varint(data.length)]);
  const indexPadded = Buffer.concat([indexBody, Buffer.alloc(pad4(indexBody.length))]);
  const index = Buffer.concat([indexPadded, u32(crc32(indexPadded))]);
  const backward = Buffer.concat([u32(index.length / 4 - 1), flags]);
  const footer = Buffer.concat([u32(crc32(backward)), backward, Buffer.from('YZ')]);
  return Buffer.concat([header, block, index, footer]);
}

const pad4 = (n: number) => (4 - (n % 4)) % 4;

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}

function varint(n: number): Buffer {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return Buffer.from(out);
}
