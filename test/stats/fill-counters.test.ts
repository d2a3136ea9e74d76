import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { Stats } from '../../src/stats/recorder.js';
import { emptyState } from '../../src/stats/model.js';
import { parseState } from '../../src/stats/persist.js';
import { openStats } from '../../src/stats/setup.js';
import { snapshot } from '../../src/stats/snapshot.js';
import { parsePrometheus, prometheus } from '../../src/stats/prometheus.js';
import { formatStats } from '../../src/cli/stats.js';
import { removeDir, tempDir } from '../helpers/nix.js';

const kinds: Record<string, 'lan' | 'upstream'> = { pi: 'lan', up: 'upstream' };
const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map(removeDir));
});

describe('stats: what came from a filling Pi', () => {
  it('splits a filling Pi\'s NAR bytes into "already there" and "filled for us"; filled bytes are not "kept off the internet"', () => {
    const s = new Stats((n) => kinds[n]);
    s.narBytes('pi', 3000, 'already-there');
    s.narBytes('pi', 1000, 'filled');
    s.narBytes('up', 500);
    const p = snapshot(s).periods.sinceInstall;
    expect(p.nar).toMatchObject({ lanBytes: 4000, upstreamBytes: 500 });
    expect(p.fill).toEqual({ alreadyThereBytes: 3000, filledBytes: 1000 });
    expect(p.bytesKeptOffInternet).toBe(3000);
    expect(p.origins.pi!.nar).toMatchObject({ bytes: 4000, alreadyThereBytes: 3000, filledBytes: 1000 });

    const samples = parsePrometheus(prometheus(s));
    const get = (source: string) => samples.find((x) => x.name === 'nix_lan_cache_lan_fill_nar_bytes_total' && x.labels.origin === 'pi' && x.labels.source === source)?.value;
    expect(get('already-there')).toBe(3000);
    expect(get('filled')).toBe(1000);
    expect(samples.some((x) => x.name === 'nix_lan_cache_lan_fill_nar_bytes_total' && x.labels.origin === 'up')).toBe(false);

    const text = formatStats({ ...snapshot(s), proxy: { lan: [], lanFill: ['http://pi/'], upstream: [], trustedPublicKeys: [], priority: 30 } }, 'http://127.0.0.1:37515');
    expect(text).toMatch(/filling Pi: already there\s+2\.9 KiB\s+2\.9 KiB\s+2\.9 KiB/);
    expect(text).toMatch(/filling Pi: filled for us\s+1000 B\s+1000 B\s+1000 B/);
    // A proxy that never had a filling Pi shows no such rows.
    expect(formatStats({ ...snapshot(new Stats()), proxy: { lan: [], upstream: [], trustedPublicKeys: [], priority: 30 } }, 'x')).not.toContain('filling Pi');
  });

  it('a state file written before these counters existed loads, and they start at 0', async () => {
    const dir = await tempDir('stats-fill');
    dirs.push(dir);
    const old = emptyState();
    const oldNar = { requests: 2, bytes: 5000, errors: 0, absent: 0, unavailable: 0, quarantined: 0 }; // no alreadyThereBytes / filledBytes
    const origin = { kind: 'lan', narinfo: { hit: 2, miss: 0, untrusted: 0, error: 0, timeout: 0, skipped: 0 }, nar: oldNar, failoversFrom: 0, failoversTo: 0 };
    const bucket = { origins: { pi: origin }, client: { narinfo: { found: 2, missing: 0, unavailable: 0 }, narinfoFrom: { pi: 2 } }, failovers: {} };
    const file = join(dir, 'stats.json');
    writeFileSync(file, JSON.stringify({ ...old, total: bucket, days: { '2024-05-10': bucket } }));

    const loaded = openStats(dir, (n) => kinds[n], pino({ level: 'silent' }));
    expect(loaded.stats.state.total.origins.pi!.nar).toEqual({ ...oldNar, alreadyThereBytes: 0, filledBytes: 0, heldInMemory: 0, heldOnDisk: 0, notHeld: 0 });
    loaded.stats.narBytes('pi', 10, 'filled');
    await loaded.close();
    expect(parseState(readFileSync(file, 'utf8')).total.origins.pi!.nar).toMatchObject({ bytes: 5010, filledBytes: 10, alreadyThereBytes: 0 });
  });
});
