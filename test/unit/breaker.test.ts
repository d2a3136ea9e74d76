import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Breaker } from '../../src/origins/breaker.js';

describe('circuit breaker (fake timers)', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('opens after maxFails, and the background probe closes it at the first probe that answers', async () => {
    let healthy = false;
    let probes = 0;
    const changes: string[] = [];
    const b = new Breaker({ maxFails: 2, probeIntervalMs: 100 }, async () => {
      probes++;
      return healthy;
    });
    b.on('change', (s) => changes.push(s));
    b.failure('x');
    expect(b.isOpen).toBe(false);
    b.failure('y');
    expect(b.isOpen).toBe(true);
    expect(b.lastReason).toBe('y');
    await vi.advanceTimersByTimeAsync(250);
    expect(probes).toBe(2);
    expect(b.isOpen).toBe(true);
    healthy = true;
    await vi.advanceTimersByTimeAsync(100);
    expect(probes).toBe(3);
    expect(b.isOpen).toBe(false);
    expect(b.lastReason).toBe('probe answered');
    expect(changes).toEqual(['open', 'closed']);
    // Closed: no more probes.
    await vi.advanceTimersByTimeAsync(1000);
    expect(probes).toBe(3);
    b.close();
  });

  it('a success resets the count of consecutive failures', () => {
    const b = new Breaker({ maxFails: 2, probeIntervalMs: 1000 }, async () => false);
    b.failure('a');
    b.success();
    b.failure('b');
    expect(b.isOpen).toBe(false);
    b.failure('c');
    expect(b.isOpen).toBe(true);
    b.close();
  });

  it('a probe that throws counts as failed, and a slow probe is never run twice at once', async () => {
    let running = 0;
    let maxRunning = 0;
    let mode: 'throw' | 'slow' | 'ok' = 'throw';
    const b = new Breaker({ maxFails: 1, probeIntervalMs: 100 }, async () => {
      running++;
      maxRunning = Math.max(maxRunning, running);
      try {
        if (mode === 'throw') throw new Error('boom');
        if (mode === 'slow') await new Promise((r) => setTimeout(r, 350));
        return mode !== 'slow';
      } finally {
        running--;
      }
    });
    b.trip('link down');
    await vi.advanceTimersByTimeAsync(200);
    expect(b.isOpen).toBe(true);
    mode = 'slow';
    await vi.advanceTimersByTimeAsync(1000);
    expect(maxRunning).toBe(1);
    expect(b.isOpen).toBe(true);
    mode = 'ok';
    await vi.advanceTimersByTimeAsync(500);
    expect(b.isOpen).toBe(false);
    b.close();
  });
});
