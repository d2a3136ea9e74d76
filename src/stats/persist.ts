import { mkdirSync, readFileSync, renameSync, writeFileSync, unlinkSync, openSync, closeSync, constants as fsConstants } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { writeFileAtomic } from '../atomic-file.js';
import { errorMessage } from '../errors.js';
import { processAlive } from '../process-alive.js';
import type { OriginKind } from '../origins/origin.js';
import { emptyBucket, emptyHistogram, emptyNarPrefetch, emptyOriginCounters, emptyState, LATENCY_BUCKETS, LOOKUP_OUTCOMES, type Bucket, type NarPrefetchCounts, type Fallback, type OriginHistory, type StatsState } from './model.js';

export const STATE_FILE = 'stats.json';

/**
 * Where stats live when `--state-dir`/`stateDir` is not given: systemd's
 * `$STATE_DIRECTORY` (a unit with `StateDirectory=`), else
 * `$XDG_STATE_HOME/nix-lan-cache`, else `~/.local/state/nix-lan-cache`.
 * "Since install" only means something if stats persist by default.
 */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env, home: string = homedir()): string {
  const systemd = env.STATE_DIRECTORY?.split(':')[0];
  if (systemd) return systemd;
  if (env.XDG_STATE_HOME && env.XDG_STATE_HOME.startsWith('/')) return join(env.XDG_STATE_HOME, 'nix-lan-cache');
  return join(home, '.local', 'state', 'nix-lan-cache');
}

class Corrupt extends Error {}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
function num(v: unknown, where: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new Corrupt(`${where} is not a count`);
  return v;
}
const KINDS = new Set(['lan', 'peer', 'upstream', 'unknown']);
function kind(v: unknown, where: string): OriginKind | 'unknown' {
  if (typeof v !== 'string' || !KINDS.has(v)) throw new Corrupt(`${where} is not an origin kind`);
  return v as OriginKind | 'unknown';
}
function counts(v: unknown, where: string): Record<string, number> {
  if (!isObj(v)) throw new Corrupt(`${where} is not an object`);
  return Object.fromEntries(Object.entries(v).map(([k, n]) => [k, num(n, `${where}.${k}`)]));
}

function bucket(v: unknown, where: string): Bucket {
  if (!isObj(v) || !isObj(v.origins) || !isObj(v.client) || !isObj(v.failovers)) throw new Corrupt(`${where} is not a bucket`);
  const b = emptyBucket();
  for (const [name, raw] of Object.entries(v.origins)) {
    if (!isObj(raw) || !isObj(raw.narinfo) || !isObj(raw.nar)) throw new Corrupt(`${where}.origins.${name} is malformed`);
    const c = emptyOriginCounters(kind(raw.kind, `${where}.origins.${name}.kind`));
    for (const o of LOOKUP_OUTCOMES) c.narinfo[o] = num(raw.narinfo[o] ?? 0, `${where}.origins.${name}.narinfo.${o}`);
    for (const k of Object.keys(c.nar) as Array<keyof typeof c.nar>) c.nar[k] = num(raw.nar[k] ?? 0, `${where}.origins.${name}.nar.${k}`);
    c.failoversFrom = num(raw.failoversFrom ?? 0, `${where}.origins.${name}.failoversFrom`);
    c.failoversTo = num(raw.failoversTo ?? 0, `${where}.origins.${name}.failoversTo`);
    b.origins[name] = c;
  }
  const n = counts(v.client.narinfo, `${where}.client.narinfo`);
  b.client.narinfo = { found: n.found ?? 0, missing: n.missing ?? 0, unavailable: n.unavailable ?? 0 };
  b.client.narinfoFrom = counts(v.client.narinfoFrom, `${where}.client.narinfoFrom`);
  for (const [from, tos] of Object.entries(v.failovers)) b.failovers[from] = counts(tos, `${where}.failovers.${from}`);
  return b;
}

function buckets(v: unknown, where: string, keyRe: RegExp): Record<string, Bucket> {
  if (!isObj(v)) throw new Corrupt(`${where} is not an object`);
  const out: Record<string, Bucket> = {};
  for (const [k, b] of Object.entries(v)) {
    if (!keyRe.test(k)) throw new Corrupt(`${where} has a bad key ${JSON.stringify(k)}`);
    out[k] = bucket(b, `${where}.${k}`);
  }
  return out;
}

/** Validates a parsed state file; throws on anything that isn't one. */
export function parseState(text: string): StatsState {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Corrupt(`not JSON: ${errorMessage(err)}`);
  }
  if (!isObj(json) || json.version !== 1) throw new Corrupt('not a version 1 stats file');
  if (typeof json.installedAt !== 'string' || Number.isNaN(Date.parse(json.installedAt))) throw new Corrupt('installedAt is not a date');
  const state = emptyState(new Date(json.installedAt));
  state.total = bucket(json.total, 'total');
  state.days = buckets(json.days, 'days', /^\d{4}-\d{2}-\d{2}$/);
  state.hours = buckets(json.hours, 'hours', /^\d{4}-\d{2}-\d{2}T\d{2}$/);
  if (!isObj(json.originInfo)) throw new Corrupt('originInfo is not an object');
  for (const [name, raw] of Object.entries(json.originInfo)) {
    if (!isObj(raw) || !isObj(raw.latency) || !Array.isArray(raw.latency.counts)) throw new Corrupt(`originInfo.${name} is malformed`);
    const latency = emptyHistogram();
    if (raw.latency.counts.length !== LATENCY_BUCKETS.length + 1) throw new Corrupt(`originInfo.${name}.latency has other buckets`);
    latency.counts = raw.latency.counts.map((c, i) => num(c, `originInfo.${name}.latency.counts[${i}]`));
    latency.sum = num(raw.latency.sum, `originInfo.${name}.latency.sum`);
    latency.count = num(raw.latency.count, `originInfo.${name}.latency.count`);
    const info: OriginHistory = { kind: kind(raw.kind, `originInfo.${name}.kind`), downs: num(raw.downs ?? 0, 'downs'), ups: num(raw.ups ?? 0, 'ups'), latency };
    if (typeof raw.url === 'string') info.url = raw.url;
    const lc = raw.lastChange;
    if (isObj(lc) && (lc.state === 'up' || lc.state === 'down') && typeof lc.at === 'string' && typeof lc.reason === 'string') {
      info.lastChange = { state: lc.state, at: lc.at, reason: lc.reason };
    }
    state.originInfo[name] = info;
  }
  const nc = counts(json.narinfoCache, 'narinfoCache');
  state.narinfoCache = { found: nc.found ?? 0, missing: nc.missing ?? 0 };
  const np = json.narinfoPrefetch === undefined ? {} : counts(json.narinfoPrefetch, 'narinfoPrefetch'); // absent in files written before prefetching
  state.narinfoPrefetch = { lookups: np.lookups ?? 0, used: np.used ?? 0, dropped: np.dropped ?? 0 };
  const nn = json.narPrefetch === undefined ? {} : counts(json.narPrefetch, 'narPrefetch'); // absent in files written before NAR prefetching
  state.narPrefetch = emptyNarPrefetch();
  for (const k of Object.keys(state.narPrefetch) as Array<keyof NarPrefetchCounts>) state.narPrefetch[k] = nn[k] ?? 0;
  if (!Array.isArray(json.fallbacks)) throw new Corrupt('fallbacks is not a list');
  state.fallbacks = json.fallbacks.filter((f): f is Fallback => isObj(f) && typeof f.at === 'string' && (f.what === 'quarantine' ? typeof f.from === 'string' : typeof f.to === 'string' && (f.what === 'nar' || f.what === 'narinfo')));
  return state;
}

export interface LoadResult {
  state: StatsState | undefined;
  /** Set when the file existed but could not be used; it was moved aside to this path. */
  corrupt?: { reason: string; movedTo: string | undefined };
}

/** Reads the state file. Missing: fresh start. Corrupt: moved aside (kept for a look) and a fresh start. Never throws. */
export function loadState(file: string, now = new Date()): LoadResult {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { state: undefined };
    return { state: undefined, corrupt: { reason: `unreadable: ${errorMessage(err)}`, movedTo: undefined } };
  }
  try {
    return { state: parseState(text) };
  } catch (err) {
    const movedTo = `${file}.corrupt-${now.toISOString().replace(/[:.]/g, '-')}`;
    try {
      renameSync(file, movedTo);
      return { state: undefined, corrupt: { reason: errorMessage(err), movedTo } };
    } catch {
      return { state: undefined, corrupt: { reason: errorMessage(err), movedTo: undefined } };
    }
  }
}

/**
 * Takes `<file>.lock` holding our PID, so two proxies on one machine don't
 * overwrite each other's counters. A lock whose process is gone is taken over.
 */
export function acquireLock(file: string): { ok: true; release(): void } | { ok: false; holder: number } {
  const lock = `${file}.lock`;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = openSync(lock, fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_WRONLY, 0o644);
      writeFileSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return {
        ok: true,
        release() {
          try {
            if (readFileSync(lock, 'utf8').trim() === String(process.pid)) unlinkSync(lock);
          } catch {
            // already gone
          }
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = Number(readFileSync(lock, 'utf8').trim());
      if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && processAlive(holder)) return { ok: false, holder };
      try {
        unlinkSync(lock); // stale: its process died (kill -9, crash)
      } catch {
        // someone else took it over; try again
      }
    }
  }
  throw new Error(`cannot take the lock ${lock}`);
}

export interface PersisterOptions {
  file: string;
  state: StatsState;
  log: Logger;
  /** Longest time a change waits before it is written. */
  flushMs: number;
}

/** Writes the state file a short while after changes, and once more on close. */
export class StatsPersister {
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();
  private closed = false;
  lastSavedAt: Date | undefined;
  lastError: string | undefined;

  constructor(private readonly options: PersisterOptions) {}

  get file(): string {
    return this.options.file;
  }

  changed(): void {
    if (this.timer || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.save();
    }, this.options.flushMs);
    this.timer.unref();
  }

  save(): Promise<void> {
    const text = JSON.stringify(this.options.state);
    this.writing = this.writing.then(async () => {
      try {
        await mkdir(dirname(this.options.file), { recursive: true });
        await writeFileAtomic(this.options.file, text);
        this.lastSavedAt = new Date();
        if (this.lastError) this.options.log.info({ event: 'stats-saved', file: this.options.file }, 'stats file written again');
        this.lastError = undefined;
      } catch (err) {
        const msg = errorMessage(err);
        if (msg !== this.lastError) this.options.log.warn({ event: 'stats-save-failed', file: this.options.file, err: msg }, `cannot write stats file: ${msg}`);
        this.lastError = msg;
      }
    });
    return this.writing;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.save();
  }
}

/** Sync variant for tests and tools that want the directory to exist up front. */
export function ensureDir(dir: string): void {
  mkdirSync(dir, { recursive: true });
}
