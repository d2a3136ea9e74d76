import xz from 'xz-decompress';

/**
 * Decodes one whole small .xz file in process with xz-decompress
 * (WebAssembly): the fallback of nar/xz-pool.ts for a file its `xz`
 * processes did not decode. Rejects when the file is not valid xz or decodes
 * to more than `maxOutput` bytes.
 */
export async function decodeWhole(input: Buffer, maxOutput: number): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  let length = 0;
  const stream = new xz.XzReadableStream(
    new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new Uint8Array(input.buffer, input.byteOffset, input.byteLength));
        c.close();
      },
    }),
  );
  const reader = stream.getReader();
  for (let r = await reader.read(); !r.done; r = await reader.read()) {
    const chunk = r.value;
    length += chunk.length;
    // A small file that decodes to more than its NAR can be (a bomb, or a wrong narinfo): stop here.
    if (length > maxOutput) {
      await reader.cancel();
      throw new Error(`decodes to more than ${maxOutput} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, length);
}
