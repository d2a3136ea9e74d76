import { describe, expect, it } from 'vitest';
import { Breaker } from '../../src/origins/breaker.js';

describe('circuit breaker', () => {
  it('opens after maxFails, and the background probe closes it as soon as the origin answers', async () => {
    let healthy = false;
    const changes: string[] = [];
    const b = new Breaker({ maxFails: 2, probeIntervalMs: 100 }, async () => healthy);
    b.on('change', (s) => changes.push(s));
    b.failure('x');
    expect(b.isOpen).toBe(false);
    b.failure('y');
    expect(b.isOpen).toBe(true);
    await new Promise((r) => setTimeout(r, 250));
    expect(b.isOpen).toBe(true);
    healthy = true;
    const start = Date.now();
    for (let i = 0; i < 50 && b.isOpen; i++) await new Promise((r) => setTimeout(r, 20));
    expect(b.isOpen).toBe(false);
    expect(Date.now() - start).toBeLessThan(500);
    expect(changes).toEqual(['open', 'closed']);
    b.close();
  });
  it('a success resets the count of consecutive failures', () => {
    const b = new Breaker({ maxFails: 2, probeIntervalMs: 1000 }, async () => false);
    b.failure('a');
    b.success();
    b.failure('b');
    expect(b.isOpen).toBe(false);
    b.close();
  });
});
