import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { NarCursor, NarMismatch } from '../../src/nar/nar-verify.js';
import { sha256FromBytes } from '../../src/protocol/hash.js';
import { narOfFile } from '../helpers/nar-fixtures.js';

const nar = narOfFile(Buffer.from('hello, world\n'.repeat(1000)));
const narHash = sha256FromBytes(createHash('sha256').update(nar).digest());
const none = { length: 0, digest: undefined };

/** Feeds `bytes` in chunks of `size`; returns what was released and the cursor. */
function feed(cursor: NarCursor, bytes: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) {
    const r = cursor.feed(bytes.subarray(i, i + size));
    if (r) out.push(r);
  }
  return out;
}

describe('NarCursor: a NAR verified as it streams, its last bytes held back', () => {
  it.each([1, 7, 21, 4096, nar.length])('releases exactly the NAR, the final chunk only once it verified (chunks of %i)', (size) => {
    const cursor = new NarCursor(narHash, nar.length, none);
    const out = feed(cursor, nar, size);
    expect(Buffer.concat(out).length).toBeLessThan(nar.length); // something is held back
    out.push(cursor.finish());
    expect(Buffer.concat(out).equals(nar)).toBe(true);
  });

  it.each([1000, nar.length])('hashes every byte of the NAR once, the held-back last chunk too (chunks of %i); its state after finish is the whole NAR\'s', (size) => {
    const proto = Object.getPrototypeOf(createHash('sha256')) as { update(this: unknown, data: Buffer): unknown };
    const update = proto.update;
    let hashed = 0;
    proto.update = function (this: unknown, data: Buffer) {
      hashed += data.length;
      return update.call(this, data);
    };
    try {
      const cursor = new NarCursor(narHash, nar.length, none);
      feed(cursor, nar, size);
      cursor.finish();
      expect(hashed).toBe(nar.length);
      expect(cursor.releasedState()).toEqual({ length: nar.length, digest: createHash('sha256').update(nar).digest() });
    } finally {
      proto.update = update;
    }
  });

  it('refuses bytes that do not start like a NAR, even one byte at a time', () => {
    const html = Buffer.from('<html>captive portal</html>');
    expect(() => feed(new NarCursor(narHash, nar.length, none), html, 1)).toThrow(NarMismatch);
    const flipped = Buffer.from(nar);
    flipped.writeUInt8(0, 15);
    expect(() => feed(new NarCursor(narHash, nar.length, none), flipped, 4)).toThrow(/does not start like a NAR/);
  });

  it('a wrong byte anywhere fails finish(); a short or long stream fails on its size', () => {
    const bad = Buffer.from(nar);
    bad.writeUInt8(bad.readUInt8(nar.length - 3) ^ 1, nar.length - 3);
    const c = new NarCursor(narHash, nar.length, none);
    feed(c, bad, 1000);
    expect(() => c.finish()).toThrow(/NarHash says/);
    const short = new NarCursor(narHash, nar.length, none);
    feed(short, nar.subarray(0, nar.length - 1), 1000);
    expect(() => short.finish()).toThrow(/NarSize says/);
    expect(() => feed(new NarCursor(narHash, nar.length - 1, none), nar, 1000)).toThrow(/more than NarSize/);
  });

  it('a second origin replays the bytes already sent, checks they hash the same, and releases only what follows', () => {
    const first = new NarCursor(narHash, nar.length, none);
    const sent = Buffer.concat(feed(first, nar.subarray(0, 5000), 1000));
    const released = first.releasedState();
    expect(released.length).toBe(sent.length);
    const second = new NarCursor(narHash, nar.length, released);
    const rest = [...feed(second, nar, 333), second.finish()];
    expect(Buffer.concat([sent, ...rest]).equals(nar)).toBe(true);

    // Another origin whose bytes differ within what was sent: refused at the boundary.
    const other = Buffer.from(nar);
    other.writeUInt8(other.readUInt8(100) ^ 1, 100);
    expect(() => feed(new NarCursor(narHash, nar.length, released), other, 333)).toThrow(/differ from those already sent/);
  });
});
