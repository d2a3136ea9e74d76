import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseNarInfo } from '../../src/protocol/narinfo.js';
import { parsePublicKey, parseSecretKey, signNarInfo, TrustedKeys } from '../../src/protocol/signing.js';
import { buildClosure, generateKey, makeStaticCache, removeDir, tempDir, type CacheKey } from '../helpers/nix.js';

// Needs real Nix (nix-bin): what Nix signs, we verify, and what we sign is what Nix signs.
describe('signatures agree with real Nix', () => {
  let dir: string;
  let key: CacheKey;
  let narinfos: string[];

  beforeAll(async () => {
    dir = await tempDir('sig');
    key = await generateKey(dir, 'unit.test-1');
    const closure = await buildClosure(`sig-${process.pid}`, [{ name: 'a', size: 1000 }, { name: 'b', size: 2000 }]);
    await makeStaticCache(join(dir, 'cache'), [closure.root], key, 'xz');
    const files = (await readdir(join(dir, 'cache'))).filter((f) => f.endsWith('.narinfo'));
    narinfos = await Promise.all(files.map((f) => readFile(join(dir, 'cache', f), 'utf8')));
  });
  afterAll(async () => removeDir(dir));

  it('verifies narinfos Nix signed, and produces the very signature Nix produced (Ed25519 is deterministic)', async () => {
    const trusted = TrustedKeys.parse([key.publicKey]);
    const secret = parseSecretKey(await readFile(key.secretFile, 'utf8'));
    expect(narinfos).toHaveLength(3);
    for (const text of narinfos) {
      const info = parseNarInfo(text);
      expect(trusted.verify(info)).toBe('unit.test-1');
      const ours = signNarInfo({ ...info, sigs: [] }, secret);
      expect(ours.sigs).toEqual(info.sigs);
    }
  });
  it('rejects a tampered narinfo, a signature by an unknown key, and a key with the right name but other bytes', async () => {
    const trusted = TrustedKeys.parse([key.publicKey]);
    const info = parseNarInfo(narinfos[0]!);
    expect(trusted.verify({ ...info, narSize: info.narSize + 1 })).toBeUndefined();
    const other = await generateKey(dir, 'other-1');
    expect(TrustedKeys.parse([other.publicKey]).verify(info)).toBeUndefined();
    const impostor = await generateKey(join(dir), 'unit.test-1-x');
    const sameName = parsePublicKey(`unit.test-1:${impostor.publicKey.split(':')[1]}`);
    expect(new TrustedKeys([sameName]).verify(info)).toBeUndefined();
  });
});
