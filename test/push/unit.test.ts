import { describe, expect, it } from 'vitest';
import { parsePathInfoJson, topoSort, type LocalPathInfo } from '../../src/push/closure.js';
import { mapLimit, Semaphore } from '../../src/push/limit.js';
import { formatBar } from '../../src/push/progress.js';
import { formatBytes } from '../../src/format.js';
import { parseRootFileName, rootFileName, checkRootName } from '../../src/push/roots.js';
import { parseSshUrl, shQuote, splitSshOpts } from '../../src/push/ssh-target.js';

const H = (c: string) => c.repeat(32);
const info = (name: string, refs: string[]): LocalPathInfo => ({
  storePath: `/nix/store/${name}`,
  hash: name.slice(0, 32),
  narHash: 'sha256:0000000000000000000000000000000000000000000000000000' as LocalPathInfo['narHash'],
  narSize: 1,
  references: refs,
  sigs: [],
});

describe('push: pure parts', () => {
  it('orders a closure references first, ignoring self-references', () => {
    const a = `${H('a')}-a`;
    const b = `${H('b')}-b`;
    const c = `${H('c')}-c`;
    const sorted = topoSort([info(c, [a, b, c]), info(b, [a]), info(a, [])]).map((i) => i.storePath);
    expect(sorted).toEqual([a, b, c].map((n) => `/nix/store/${n}`));
  });

  it('reads nix path-info --json: SRI NarHash to nix32, references to base names', () => {
    const [p] = parsePathInfoJson(
      JSON.stringify([
        {
          path: `/nix/store/${H('a')}-x`,
          narHash: 'sha256-EFUdrtf6Rn0LWIJufrmg8q99aT3jGfLvd1//zaJEufY=',
          narSize: 120,
          references: [`/nix/store/${H('b')}-y`],
          deriver: `/nix/store/${H('d')}-x.drv`,
          signatures: ['k-1:abc'],
        },
      ]),
    );
    expect(p!.narHash).toBe('sha256:1xmr8jicvzszfzpz46g37mlpvbzjl2wpwvl2b05psipssyp1sm8h');
    expect(p!.references).toEqual([`${H('b')}-y`]);
    expect(p!.deriver).toBe(`${H('d')}-x.drv`);
    expect(p!.sigs).toEqual(['k-1:abc']);
  });

  it('parses ssh:// targets and quotes for the remote shell', () => {
    expect(parseSshUrl('ssh://pi@cache.lan:2222/srv/nix cache')).toEqual({ user: 'pi', host: 'cache.lan', port: 2222, path: '/srv/nix cache' });
    expect(parseSshUrl('ssh://host/srv/')).toEqual({ host: 'host', path: '/srv' });
    expect(() => parseSshUrl('ssh://host')).toThrow(/ssh:\/\/\[user@\]host/);
    expect(shQuote("it's")).toBe(`'it'\\''s'`);
    expect(splitSshOpts(' -i key  -p 22 ')).toEqual(['-i', 'key', '-p', '22']);
  });

  it('names roots by time, sortably, and rejects odd names', () => {
    const d = new Date('2024-05-01T12:34:56.789Z');
    expect(rootFileName(d)).toBe('2024-05-01T12-34-56.789Z');
    expect(parseRootFileName(rootFileName(d))?.getTime()).toBe(d.getTime());
    expect(parseRootFileName('.tmp-1-2-x')).toBeUndefined();
    expect(() => checkRootName('../x')).toThrow(/bad root name/);
  });

  it('draws a progress bar with paths, bytes, rate and ETA', () => {
    const bar = formatBar({ pathsDone: 3, pathsTotal: 10, bytesDone: 4 * 1024 * 1024, bytesTotal: 8 * 1024 * 1024, elapsedSeconds: 2 }, 10);
    expect(bar).toBe('[#####.....] 3/10 paths  4.0 MiB/8.0 MiB  2.0 MiB/s  ETA 00:02');
    expect(formatBytes(512)).toBe('512 B');
  });

  it('bounds concurrency', async () => {
    let active = 0;
    let peak = 0;
    const sem = new Semaphore(3);
    await mapLimit(Array.from({ length: 20 }, (_, i) => i), 20, (i) =>
      sem.use(async () => {
        peak = Math.max(peak, ++active);
        await new Promise((r) => setTimeout(r, 1 + (i % 3)));
        active--;
      }),
    );
    expect(peak).toBe(3);
  });
});
