import { afterEach, describe, expect, it } from 'vitest';
import { MemoryGovernor } from '../../src/memory-governor.js';
import { until } from '../helpers/wait.js';

describe('the memory governor: a collection when Buffers pile up, none for data really held', () => {
  let g: MemoryGovernor | undefined;
  afterEach(() => g?.stop());

  it('dead Buffers piling up start a collection that frees them', async () => {
    // The timer is out of the way: the test looks (check()) right after the pile dies, before V8 might collect on its own.
    g = new MemoryGovernor({ slackBytes: 16 * 2 ** 20, everyMs: 3_600_000, minGapMs: 100 });
    const before = process.memoryUsage().arrayBuffers;
    let pile: Buffer[] | undefined = Array.from({ length: 48 }, () => Buffer.alloc(2 ** 20, 1));
    pile = undefined; // dead, and nothing else allocates on the JS heap to make V8 look
    g.check();
    expect(g.collections).toBe(1);
    await until('the dead Buffers freed', 5000, () => process.memoryUsage().arrayBuffers < before + 16 * 2 ** 20 || undefined);
    expect(pile).toBeUndefined();
  });

  it('dead objects piling up on V8\'s heap (a burst of narinfo requests) start a collection that frees them', async () => {
    g = new MemoryGovernor({ slackBytes: 2 ** 40, heapSlackBytes: 24 * 2 ** 20, everyMs: 20, minGapMs: 100 });
    const before = process.memoryUsage().heapUsed;
    // ~48 MB of small objects, dead at once; nothing makes V8 collect old space by itself this quickly.
    let pile: Array<{ a: number; b: string }[]> | undefined = Array.from({ length: 400 }, (_, i) => Array.from({ length: 1000 }, (_, j) => ({ a: i * j, b: `x${i}-${j}` })));
    pile = undefined;
    await until('a collection', 5000, () => g!.collections > 0 || undefined);
    await until('the dead objects freed', 5000, () => process.memoryUsage().heapUsed < before + 24 * 2 ** 20 || undefined);
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
