import { readFile } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { missingMemorySettings } from '../../src/cli/memory.js';
import { stopAll } from '../helpers/proc.js';
import { startProxy, type ProxyProcess } from '../helpers/proxy.js';

/** The proxy's memory settings are its own, however it is started (src/cli/memory.ts, issue 26). */
describe('the memory settings of a proxy that runs for days', () => {
  let proxy: ProxyProcess | undefined;
  afterEach(async () => {
    await proxy?.stop();
    await stopAll();
    proxy = undefined;
  });

  const environOf = async (pid: number) => Object.fromEntries((await readFile(`/proc/${pid}/environ`, 'utf8')).split('\0').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  const cmdlineOf = async (pid: number) => (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');

  it('started as `npx nix-lan-cache serve` with nothing set: the same process (same PID) runs with glibc\'s and V8\'s settings', async () => {
    proxy = await startProxy(['--no-mdns', '--upstream', 'http://127.0.0.1:9/'], { asFromNpm: true });
    const pid = proxy.child.pid!;
    const env = await environOf(pid);
    expect(env).toMatchObject({ MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '32768' });
    expect(await cmdlineOf(pid)).toContain('--max-semi-space-size=4');
    expect(await cmdlineOf(pid)).toContain('--heap-growing-percent=100');
    expect((await fetch(`${proxy.url}/nix-cache-info`)).status).toBe(200);
  });

  it("the user's own settings are kept: a MALLOC_ARENA_MAX and a semi-space size of theirs win", async () => {
    proxy = await startProxy(['--no-mdns', '--upstream', 'http://127.0.0.1:9/'], { env: { MALLOC_ARENA_MAX: '4', NODE_OPTIONS: '--max-semi-space-size=8' } });
    const pid = proxy.child.pid!;
    expect(await environOf(pid)).toMatchObject({ MALLOC_ARENA_MAX: '4', MALLOC_MMAP_THRESHOLD_: '32768' });
    expect(await cmdlineOf(pid)).not.toContain('--max-semi-space-size=4');
  });

  it('nothing is missing: no re-execution', () => {
    expect(missingMemorySettings({ MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '1' }, ['--max-semi-space-size=2', '--heap-growing-percent=50'])).toEqual({ env: {}, flags: [] });
    expect(missingMemorySettings({}, [])).toEqual({ env: { MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '32768' }, flags: ['--max-semi-space-size=4', '--heap-growing-percent=100'] });
  });
});
