import { existsSync } from 'node:fs';
import { copyFile, readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StatsResponse } from '../../src/api.js';
import { parseNarInfo } from '../../src/protocol/narinfo.js';
import { NIX_CLIENTS } from '../helpers/nix-clients.js';
import { stopAll } from '../helpers/proc.js';
import { startProxy, type ProxyProcess } from '../helpers/proxy.js';
import { household, type Household } from '../helpers/scenario.js';

/**
 * Issue 22, item 4: a corrupt, truncated or wrong NAR on the Pi never fails
 * a Nix command when upstream has the path, the first try included. Nix
 * 2.26 and 2.34 resume a broken transfer with Range and keep the bytes they
 * have, so a response aborted after a bad byte fails the command ("hash
 * mismatch"); the proxy holds a LAN cache's NAR back until it is verified.
 */

// Two leaves of the same size: their NARs have the same NarSize, so one can stand in for the other.
const LEAVES = [{ name: 'big', size: 4_000_000 }, { name: 'twin', size: 4_000_000 }, ...Array.from({ length: 3 }, (_, i) => ({ name: `small${i}`, size: 30_000 }))];

type Spoil = (file: string, h: Household) => Promise<void>;
const SPOILS: Array<[string, Spoil]> = [
  [
    'one byte flipped in the middle of its xz file (same size)',
    async (file) => {
      const bad = await readFile(file);
      bad[Math.floor(bad.length / 2)]! ^= 0x55;
      await writeFile(file, bad);
    },
  ],
  ['its xz file truncated to half (nginx sends the shorter length)', async (file) => truncate(file, Math.floor((await readFile(file)).length / 2))],
  ['another path\'s NAR of the same NarSize in its place', async (file, h) => copyFile(join(h.piDir, narinfoOf(h, 'twin').url), file)],
];

let h: Household;
const narinfoOf = (hh: Household, leaf: string) => {
  const path = hh.closure.paths.find((p) => p.endsWith(`-${leaf}`))!;
  return parseNarInfo(cachedNarinfos.get(path)!);
};
const cachedNarinfos = new Map<string, string>();

beforeAll(async () => {
  h = await household('corrupt-pi', LEAVES, { piByPush: true });
  for (const p of h.closure.paths) cachedNarinfos.set(p, await readFile(join(h.piDir, `${p.slice(11, 43)}.narinfo`), 'utf8'));
});
afterAll(async () => {
  await stopAll();
  await h?.cleanup();
});

async function withSpoiledBig<T>(spoil: Spoil, body: (bigUrl: string) => Promise<T>): Promise<T> {
  const url = narinfoOf(h, 'big').url;
  const file = join(h.piDir, url);
  const original = await readFile(file);
  await spoil(file, h);
  try {
    return await body(url);
  } finally {
    await writeFile(file, original);
  }
}

/**
 * A proxy in front of the Pi and upstream. The Pi gets 2 s (not 200 ms) to
 * start a NAR, so a loaded test machine never sends the spoiled NAR upstream's
 * way before the Pi is read (the test would prove nothing).
 */
let configs = 0;
async function proxy(cache: Record<string, unknown> = {}): Promise<ProxyProcess> {
  const config = join(h.dir, `proxy-${++configs}.json`);
  await writeFile(config, JSON.stringify({ timeouts: { lan: { hedgeMs: 2000 } }, cache }));
  return startProxy(['--no-mdns', '--config', config, '--lan', h.pi.url, '--upstream', h.upstream.url, '--trusted-public-key', h.piKey.publicKey, '--trusted-public-key', h.upstreamKey.publicKey]);
}

describe.each(NIX_CLIENTS)('$name: a spoiled NAR on the Pi, the path also upstream: the first nix-store -r succeeds', (client) => {
  it.each(SPOILS)('%s', async (_what, spoil) => {
    await withSpoiledBig(spoil, async (bigUrl) => {
      const p = await proxy();
      try {
        const piBefore = (await h.pi.narHits()).length;
        const res = await h.fetch(p.url, { client, timeoutMs: 120_000 });
        expect(res.code, res.stderr).toBe(0);
        expect(res.stderr).not.toMatch(/hash mismatch|retrying/i);
        expect(h.closure.paths.every((x) => existsSync(join(res.store, x)))).toBe(true);
        // The Pi was asked for the spoiled file (else the test proves nothing), and its copy was quarantined.
        expect((await h.pi.narHits()).slice(piBefore).some((e) => e.uri.endsWith(bigUrl))).toBe(true);
        expect(p.logs.find((l) => l.event === 'nar-quarantine')).toMatchObject({ origin: new URL(h.pi.url).host, failure: 'content' });
        const stats = (await (await fetch(new URL('/_/stats', p.url))).json()) as StatsResponse;
        const pi = Object.values(stats.periods.sinceInstall.origins).find((o) => o.kind === 'lan')!;
        expect(pi.nar.heldInMemory).toBeGreaterThan(0);
      } finally {
        await p.stop();
      }
    });
  });

  it('a NAR larger than the memory budget is spooled to disk and held the same way', async () => {
    await withSpoiledBig(SPOILS[0]![1], async () => {
      const p = await proxy({ narPrefetchBytes: 1024 * 1024 });
      try {
        const res = await h.fetch(p.url, { client, timeoutMs: 120_000 });
        expect(res.code, res.stderr).toBe(0);
        const stats = (await (await fetch(new URL('/_/stats', p.url))).json()) as StatsResponse;
        const pi = Object.values(stats.periods.sinceInstall.origins).find((o) => o.kind === 'lan')!;
        expect(pi.nar.heldOnDisk).toBeGreaterThan(0);
        expect(pi.nar.quarantined).toBe(1);
      } finally {
        await p.stop();
      }
    });
  });
});
