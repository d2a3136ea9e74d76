import { afterEach, describe, expect, it } from 'vitest';
import { MemoryGovernor } from '../../src/memory-governor.js';
import { until } from '../helpers/wait.js';

describe('the memory governor: a collection when Buffers pile up, none for data really held', () => {
  let g: MemoryGovernor | undefined;
  afterEach(() => g?.stop());

  it('dead Buffers piling up start a collection that frees them', async () => {
    g = new MemoryGovernor({ slackBytes: 16 * 2 ** 20, everyMs: 20, minGapMs: 100 });
    const before = process.memoryUsage().arrayBuffers;
    let pile: Buffer[] | undefined = Array.from({ length: 48 }, () => Buffer.alloc(2 ** 20, 1));
    pile = undefined; // dead, and nothing else allocates on the JS heap to make V8 look
    await until('a collection', 5000, () => g!.collections > 0 || undefined);
    await until('the dead Buffers freed', 5000, () => process.memoryUsage().arrayBuffers < before + 16 * 2 ** 20 || undefined);
    expect(pile).toBeUndefined();
  });

  it('Buffers that stay alive (NARs held for Nix) do not make it collect again and again', async () => {
    g = new MemoryGovernor({ slackBytes: 16 * 2 ** 20, everyMs: 20, minGapMs: 50 });
    const held = Array.from({ length: 48 }, () => Buffer.alloc(2 ** 20, 1));
    await until('a first collection', 5000, () => g!.collections > 0 || undefined);
    await new Promise((r) => setTimeout(r, 200)); // the collection ran: the floor is now the live data
    const after = g.collections;
    await new Promise((r) => setTimeout(r, 500));
    expect(g.collections).toBe(after);
    expect(held).toHaveLength(48);
  });
});
