'use strict';
// Decodes one whole small .xz file with xz-decompress (WebAssembly). Used on the xz pool's
// worker threads (xz-worker.cjs) and, with no threads, on the main thread (src/nar/xz-pool.ts).
const xz = require('xz-decompress');

/** The decoded bytes; throws when the file is not valid xz or decodes to more than `maxOutput` bytes. */
async function decodeWhole(input, maxOutput) {
  const chunks = [];
  let length = 0;
  const stream = new xz.XzReadableStream(
    new ReadableStream({
      start(c) {
        c.enqueue(new Uint8Array(input.buffer, input.byteOffset, input.byteLength));
        c.close();
      },
    }),
  );
  for await (const chunk of stream) {
    length += chunk.length;
    // A small file that decodes to more than its NAR can be (a bomb, or a wrong narinfo): stop here.
    if (length > maxOutput) throw new Error(`decodes to more than ${maxOutput} bytes`);
    chunks.push(chunk);
  }
  const out = new Uint8Array(length);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

module.exports = { decodeWhole };
