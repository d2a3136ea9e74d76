import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { outcomeOf, Stats } from '../../src/stats/recorder.js';
import { LATENCY_BUCKETS, emptyState } from '../../src/stats/model.js';
import { loadState, parseState, StatsPersister, defaultStateDir } from '../../src/stats/persist.js';
import { writeFileAtomic } from '../../src/atomic-file.js';
import { openStats } from '../../src/stats/setup.js';
import { snapshot } from '../../src/stats/snapshot.js';
import { prometheus, parsePrometheus, escapeLabel } from '../../src/stats/prometheus.js';
import { removeDir, tempDir } from '../helpers/nix.js';

const silent = pino({ level: 'silent' });
const kinds: Record<string, 'lan' | 'upstream'> = { pi: 'lan', up: 'upstream' };

function clock(start: Date) {
  let t = start.getTime();
  return { now: () => new Date(t), advance: (ms: number) => (t += ms) };
}

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map(removeDir));
});

describe('counters', () => {
  it('LAN hit rate by bytes and by narinfo, bytes kept off the internet, per period', () => {
    const c = clock(new Date(2024, 4, 10, 12, 0, 0));
    const s = new Stats((n) => kinds[n], { now: c.now });
    s.narinfoLookup('pi', 'hit', 3);
    s.narinfoAnswered('found', 'pi');
    s.narStarted('pi');
    s.narBytes('pi', 3000);
    s.narinfoLookup('pi', 'miss', 2);
    s.narinfoLookup('up', 'hit', 40);
    s.narinfoAnswered('found', 'up');
    s.narinfoFallback('h1', 'up', [{ origin: 'pi', outcome: 'miss' }]);
    s.narStarted('up');
    s.narBytes('up', 1000);
    s.narinfoAnswered('missing');

    c.advance(8 * 86400_000); // eight days later: the first day falls out of "last 7 days"
    s.narStarted('up');
    s.narBytes('up', 500);
    s.failover('pi', 'up', 'h2');

    const snap = snapshot(s, c.now());
    const all = snap.periods.sinceInstall;
    expect(all.nar).toEqual({ requests: 3, bytes: 4500, lanBytes: 3000, peerBytes: 0, upstreamBytes: 1500 });
    expect(all.lanHitRate.byBytes).toBeCloseTo(3000 / 4500);
    expect(all.lanHitRate.byNarinfo).toBe(0.5);
    expect(all.bytesKeptOffInternet).toBe(3000);
    expect(all.client).toMatchObject({ narinfoRequests: 3, narinfoFound: 2, narinfoMissing: 1, narinfoFromLan: 1, narinfoFromUpstream: 1 });
    expect(all.origins.pi!.narinfo).toMatchObject({ hit: 1, miss: 1 });
    expect(all.failovers).toBe(1);
    expect(snap.periods.today.nar).toEqual({ requests: 1, bytes: 500, lanBytes: 0, peerBytes: 0, upstreamBytes: 500 });
    expect(snap.periods.today.lanHitRate.byBytes).toBe(0);
    expect(snap.periods.today.lanHitRate.byNarinfo).toBeNull();
    expect(snap.periods.last7Days.nar.bytes).toBe(500);
    expect(snap.hourly).toHaveLength(48);
    expect(snap.hourly.at(-1)!.upstreamBytes).toBe(500);
    expect(snap.hourly.reduce((a, h) => a + h.lanBytes, 0)).toBe(0); // the first day's hour is older than 48 h
    expect(snap.recentFallbacks.map((f) => f.what)).toEqual(['nar', 'narinfo']);
    expect(snap.recentFallbacks[1]!.lan).toEqual([{ origin: 'pi', outcome: 'miss' }]);
  });

  it('bytes and narinfos from peers (other machines\' shares) are kept off the internet and count as LAN hits, apart from the Pi\'s', () => {
    const c = clock(new Date(2024, 4, 10, 12, 0, 0));
    const s = new Stats((n) => ({ pi: 'lan', laptop: 'peer', up: 'upstream' })[n] as 'lan' | 'peer' | 'upstream', { now: c.now });
    s.narinfoAnswered('found', 'pi');
    s.narBytes('pi', 1000);
    s.narinfoAnswered('found', 'laptop');
    s.narinfoAnswered('found', 'laptop');
    s.narBytes('laptop', 2000);
    s.narinfoAnswered('found', 'up');
    s.narBytes('up', 1000);
    const all = snapshot(s, c.now()).periods.sinceInstall;
    expect(all.nar).toMatchObject({ lanBytes: 1000, peerBytes: 2000, upstreamBytes: 1000, bytes: 4000 });
    expect(all.client).toMatchObject({ narinfoFromLan: 1, narinfoFromPeers: 2, narinfoFromUpstream: 1 });
    expect(all.lanHitRate).toEqual({ byBytes: 0.75, byNarinfo: 0.75 });
    expect(all.bytesKeptOffInternet).toBe(3000);
    expect(snapshot(s, c.now()).hourly.at(-1)).toMatchObject({ lanBytes: 1000, peerBytes: 2000, narinfoFromPeers: 2 });
    // Counters of a peer survive a restart with their kind.
    const again = parseState(JSON.stringify(s.state));
    expect(again.total.origins.laptop!.kind).toBe('peer');
  });

  it('counts a lookup by the typed cause its origin gave, never by the words of its reason', () => {
    expect(outcomeOf({ status: 'unknown', cause: 'timeout', reason: 'UND_ERR_HEADERS_TIMEOUT' })).toBe('timeout');
    expect(outcomeOf({ status: 'unknown', cause: 'unreachable', reason: 'connect ECONNREFUSED (the Timeout Inn café wifi)' })).toBe('error');
    expect(outcomeOf({ status: 'unknown', cause: 'server-error', reason: 'HTTP 504 gateway timeout' })).toBe('error');
    expect(outcomeOf({ status: 'absent', reason: 'untrusted' })).toBe('untrusted');
    expect(outcomeOf({ status: 'absent', reason: 'not-found' })).toBe('miss');
  });

  it('keeps 35 days and 48 hours of buckets', () => {
    const c = clock(new Date(2024, 0, 1, 0, 30));
    const s = new Stats((n) => kinds[n], { now: c.now });
    for (let i = 0; i < 24 * 50; i++) {
      s.narBytes('pi', 1);
      c.advance(3600_000);
    }
    expect(Object.keys(s.state.days)).toHaveLength(35);
    expect(Object.keys(s.state.hours)).toHaveLength(48);
    expect(s.state.total.origins.pi!.nar.bytes).toBe(1200);
  });

  it('latency histogram: one count per asked lookup in the right bucket; skipped lookups are not timed', () => {
    const s = new Stats((n) => kinds[n]);
    s.narinfoLookup('pi', 'hit', 3); // 0.003 s -> le 0.005
    s.narinfoLookup('pi', 'timeout', 800); // 0.8 s -> le 1
    s.narinfoLookup('pi', 'error', 60_000); // +Inf
    s.narinfoLookup('pi', 'skipped', 0);
    const h = s.state.originInfo.pi!.latency;
    expect(h.count).toBe(3);
    expect(h.counts[0]).toBe(1);
    expect(h.counts[LATENCY_BUCKETS.indexOf(1)]).toBe(1);
    expect(h.counts[LATENCY_BUCKETS.length]).toBe(1);
    expect(h.sum).toBeCloseTo(60.803);
  });
});

describe('persistence', () => {
  it('round-trips through the state file; a corrupt file is moved aside and counting starts fresh', async () => {
    const dir = await tempDir('stats-unit');
    dirs.push(dir);
    const a = openStats(dir, (n) => kinds[n], silent);
    a.stats.narStarted('pi');
    a.stats.narBytes('pi', 1234);
    a.stats.narinfoLookup('up', 'timeout', 15000);
    await a.close();
    const file = join(dir, 'stats.json');
    const saved = parseState(readFileSync(file, 'utf8'));
    expect(saved.total.origins.pi!.nar.bytes).toBe(1234);

    const b = openStats(dir, (n) => kinds[n], silent);
    expect(b.stats.state.installedAt).toBe(saved.installedAt);
    expect(b.stats.state.total).toEqual(saved.total);
    b.stats.narBytes('pi', 1);
    await b.close();
    expect(parseState(readFileSync(file, 'utf8')).total.origins.pi!.nar.bytes).toBe(1235);

    for (const garbage of ['{"version":1,"installedAt":"x"', '{"version":2}', JSON.stringify({ ...emptyState(), total: { origins: { pi: { kind: 'lan', narinfo: {}, nar: { bytes: -5 } } }, client: { narinfo: {}, narinfoFrom: {} }, failovers: {} } })]) {
      writeFileSync(file, garbage);
      const loaded = loadState(file);
      expect(loaded.state).toBeUndefined();
      expect(loaded.corrupt?.movedTo).toBeDefined();
      expect(readFileSync(loaded.corrupt!.movedTo!, 'utf8')).toBe(garbage);
      expect(existsSync(file)).toBe(false);
    }
    writeFileSync(file, 'not json at all');
    const c = openStats(dir, (n) => kinds[n], silent);
    expect(c.stats.state.total.origins).toEqual({});
    await c.close();
    expect(parseState(readFileSync(file, 'utf8')).total.origins).toEqual({});
  });

  it('a second proxy on the same state dir keeps its counters in memory instead of overwriting', async () => {
    const dir = await tempDir('stats-lock');
    dirs.push(dir);
    const a = openStats(dir, (n) => kinds[n], silent);
    expect(a.file).toBeDefined();
    // The lock names a live process (our parent) that is not us: a second proxy must not take the file.
    writeFileSync(join(dir, 'stats.json.lock'), `${process.ppid}\n`);
    const b = openStats(dir, (n) => kinds[n], silent);
    expect(b.file).toBeUndefined();
    expect(snapshot(b.stats).persistence.file).toBeNull();
    // A lock left by a dead process (kill -9) is taken over.
    writeFileSync(join(dir, 'stats.json.lock'), '999999999\n');
    const c = openStats(dir, (n) => kinds[n], silent);
    expect(c.file).toBe(join(dir, 'stats.json'));
    await c.close();
    await a.close();
  });

  it('writes atomically: no temp file left, the old content stays whole until the rename', async () => {
    const dir = await tempDir('stats-atomic');
    dirs.push(dir);
    const file = join(dir, 'sub', 'stats.json');
    mkdirSync(join(dir, 'sub'));
    await writeFileAtomic(file, 'one');
    await writeFileAtomic(file, 'two');
    expect(readFileSync(file, 'utf8')).toBe('two');
    expect(readdirSync(join(dir, 'sub'))).toEqual(['stats.json']);
    // A failure after the new content is written leaves the old file whole and no temp file behind.
    await expect(writeFileAtomic(file, 'three', { beforeRename: () => Promise.reject(new Error('disk went away')) })).rejects.toThrow('disk went away');
    expect(readFileSync(file, 'utf8')).toBe('two');
    expect(readdirSync(join(dir, 'sub'))).toEqual(['stats.json']);
    const state = emptyState();
    const p = new StatsPersister({ file, state, log: silent, flushMs: 20 });
    state.narinfoCache.found = 7;
    p.changed();
    for (let i = 0; i < 100 && !p.lastSavedAt; i++) await new Promise((r) => setTimeout(r, 10));
    expect(parseState(readFileSync(file, 'utf8')).narinfoCache.found).toBe(7);
    await p.close();
  });

  it('default state directory: systemd STATE_DIRECTORY, then XDG_STATE_HOME, then ~/.local/state', () => {
    expect(defaultStateDir({ STATE_DIRECTORY: '/var/lib/nix-lan-cache' }, '/home/u')).toBe('/var/lib/nix-lan-cache');
    expect(defaultStateDir({ XDG_STATE_HOME: '/x/state' }, '/home/u')).toBe('/x/state/nix-lan-cache');
    expect(defaultStateDir({ XDG_STATE_HOME: 'relative' }, '/home/u')).toBe('/home/u/.local/state/nix-lan-cache');
    expect(defaultStateDir({}, '/home/u')).toBe('/home/u/.local/state/nix-lan-cache');
  });
});

describe('Prometheus text format', () => {
  it('every sample belongs to a family with HELP and TYPE; histograms are cumulative and end in +Inf = count', () => {
    const s = new Stats((n) => ({ ...kinds, 'we"ird\\name\n': 'lan' as const })[n]);
    s.narinfoLookup('pi', 'hit', 3);
    s.narinfoLookup('pi', 'hit', 30);
    s.narinfoLookup('pi', 'miss', 300);
    s.narinfoLookup('we"ird\\name\n', 'error', 1);
    s.narStarted('pi');
    s.narBytes('pi', 100);
    s.narBytes('up', 50);
    s.failover('pi', 'up');
    s.narinfoAnswered('found', 'pi');
    const text = prometheus(s);
    expect(text.endsWith('\n')).toBe(true);
    const samples = parsePrometheus(text);
    const types = new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
    const helps = new Set([...text.matchAll(/^# HELP (\S+) /gm)].map((m) => m[1]!));
    for (const sm of samples) {
      const family = sm.name.replace(/_(bucket|sum|count)$/, '');
      const fam = types.has(sm.name) ? sm.name : family;
      expect(types.has(fam), sm.name).toBe(true);
      expect(helps.has(fam), sm.name).toBe(true);
      if (types.get(fam) === 'counter') expect(sm.name.endsWith('_total'), sm.name).toBe(true);
    }
    const get = (name: string, labels: Record<string, string>) => samples.find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v))?.value;
    expect(get('nix_lan_cache_nar_bytes_total', { origin: 'pi', kind: 'lan' })).toBe(100);
    expect(get('nix_lan_cache_nar_bytes_total', { origin: 'up', kind: 'upstream' })).toBe(50);
    expect(get('nix_lan_cache_narinfo_requests_total', { origin: 'pi', outcome: 'hit' })).toBe(2);
    expect(get('nix_lan_cache_failovers_total', { from: 'pi', to: 'up' })).toBe(1);
    expect(get('nix_lan_cache_lan_hit_ratio', { by: 'bytes' })).toBeCloseTo(100 / 150);
    expect(get('nix_lan_cache_bytes_kept_off_internet_total', {})).toBe(100);
    const buckets = samples.filter((x) => x.name === 'nix_lan_cache_narinfo_lookup_duration_seconds_bucket' && x.labels.origin === 'pi');
    expect(buckets.map((b) => b.labels.le)).toEqual([...LATENCY_BUCKETS.map(String), '+Inf']);
    for (let i = 1; i < buckets.length; i++) expect(buckets[i]!.value).toBeGreaterThanOrEqual(buckets[i - 1]!.value);
    expect(buckets.at(-1)!.value).toBe(3);
    expect(get('nix_lan_cache_narinfo_lookup_duration_seconds_count', { origin: 'pi' })).toBe(3);
    expect(get('nix_lan_cache_narinfo_lookup_duration_seconds_sum', { origin: 'pi' })).toBeCloseTo(0.333);
    // A label value with a quote, a backslash and a newline survives the round trip.
    expect(get('nix_lan_cache_narinfo_requests_total', { origin: 'we"ird\\name\n', outcome: 'error' })).toBe(1);
    expect(escapeLabel('a"b\\c\nd')).toBe('a\\"b\\\\c\\nd');
    // No hit ratio yet: NaN, which Prometheus accepts.
    expect(prometheus(new Stats())).toContain('nix_lan_cache_lan_hit_ratio{by="bytes"} NaN');
  });
});
