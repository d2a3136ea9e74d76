'use strict';
// One thread of the xz pool (src/nar/xz-pool.ts): decodes whole small .xz files with
// xz-decompress (WebAssembly), one at a time, off the proxy's main thread.
const { parentPort, workerData } = require('node:worker_threads');
const xz = require(workerData.xzPath);

parentPort.on('message', async (job) => {
  const chunks = [];
  let length = 0;
  try {
    const stream = new xz.XzReadableStream(
      new ReadableStream({
        start(c) {
          c.enqueue(new Uint8Array(job.input));
          c.close();
        },
      }),
    );
    for await (const chunk of stream) {
      length += chunk.length;
      // A small file that decodes to more than its NAR can be (a bomb, or a wrong narinfo): stop here.
      if (length > job.maxOutput) throw new Error(`decodes to more than ${job.maxOutput} bytes`);
      chunks.push(chunk);
    }
    const out = new Uint8Array(length);
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.length;
    }
    // Copied, not transferred: the copy is allocated by the main thread, which keeps it, so this thread's
    // malloc arena only ever holds the file being decoded (transferred buffers grew it by the NARs held).
    parentPort.postMessage({ id: job.id, output: out });
  } catch (err) {
    parentPort.postMessage({ id: job.id, error: String((err && err.message) || err) });
  }
});
