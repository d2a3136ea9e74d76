'use strict';
// One thread of the xz pool (src/nar/xz-pool.ts): decodes whole small .xz files, one at a time,
// off the proxy's main thread.
const { parentPort } = require('node:worker_threads');
const { decodeWhole } = require('./xz-decode.cjs');

parentPort.on('message', async (job) => {
  try {
    const out = await decodeWhole(job.input, job.maxOutput);
    // Copied, not transferred: the copy is allocated by the main thread, which keeps it, so this thread's
    // malloc arena only ever holds the file being decoded (transferred buffers grew it by the NARs held).
    parentPort.postMessage({ id: job.id, output: out });
  } catch (err) {
    parentPort.postMessage({ id: job.id, error: String((err && err.message) || err) });
  }
});
