import { readdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { errorMessage } from '../errors.js';
import type { OriginKind } from '../origins/origin.js';
import { Stats } from './recorder.js';
import { acquireLock, defaultStateDir, ensureDir, loadState, StatsPersister, STATE_FILE } from './persist.js';

export interface OpenedStats {
  stats: Stats;
  /** The state file, or undefined when counters are kept in memory only. */
  file: string | undefined;
  close(): Promise<void>;
}

/** How long a change may wait before it is on disk; NIX_LAN_CACHE_STATS_FLUSH_MS overrides (tests, slow disks). */
export function flushMs(env: NodeJS.ProcessEnv = process.env): number {
  const v = Number(env.NIX_LAN_CACHE_STATS_FLUSH_MS);
  return Number.isInteger(v) && v >= 10 && v <= 3_600_000 ? v : 5000;
}

/**
 * Loads the counters from `<stateDir>/stats.json` (or the default state
 * directory) and keeps them saved. Never fails the proxy's start: a corrupt
 * file is moved aside, an unwritable directory or a file in use by another
 * proxy means in-memory counters, each logged.
 */
export function openStats(stateDir: string | undefined, kindOf: (name: string) => OriginKind | undefined, log: Logger): OpenedStats {
  const dir = stateDir ?? defaultStateDir();
  const file = join(dir, STATE_FILE);
  const memoryOnly = (why: string): OpenedStats => {
    log.warn({ event: 'stats-memory-only', file, reason: why }, `stats are kept in memory only: ${why}`);
    const stats = new Stats(kindOf);
    stats.persistence = () => ({ file: null, lastSavedAt: undefined, error: why });
    return { stats, file: undefined, close: async () => {} };
  };
  let lock: ReturnType<typeof acquireLock>;
  try {
    ensureDir(dir);
    lock = acquireLock(file);
  } catch (err) {
    return memoryOnly(`cannot use ${dir}: ${errorMessage(err)}`);
  }
  if (!lock.ok) return memoryOnly(`${file} is in use by process ${lock.holder} (another nix-lan-cache)`);
  const release = lock.release;

  removeStaleTemps(dir);
  const loaded = loadState(file);
  if (loaded.corrupt) {
    log.warn(
      { event: 'stats-corrupt', file, reason: loaded.corrupt.reason, movedTo: loaded.corrupt.movedTo },
      `stats file is unusable (${loaded.corrupt.reason}); starting fresh${loaded.corrupt.movedTo ? `, old file kept as ${loaded.corrupt.movedTo}` : ''}`,
    );
  }
  let persister: StatsPersister | undefined;
  const stats = new Stats(kindOf, { ...(loaded.state ? { state: loaded.state } : {}), onChange: () => persister?.changed() });
  persister = new StatsPersister({ file, state: stats.state, log, flushMs: flushMs() });
  const p = persister;
  stats.persistence = () => ({ file, lastSavedAt: p.lastSavedAt, error: p.lastError });
  log.info({ event: 'stats-loaded', file, fresh: !loaded.state, installedAt: stats.state.installedAt }, loaded.state ? `stats continue from ${file}` : `stats start fresh in ${file}`);
  void p.save(); // the file exists from the start, so a crash before the first change still leaves one
  return {
    stats,
    file,
    async close() {
      await p.close();
      release();
    },
  };
}

/** Temp files of a save that a crash interrupted; we hold the lock, so none of them is being written. */
function removeStaleTemps(dir: string): void {
  try {
    for (const f of readdirSync(dir)) {
      if (f.startsWith(`${STATE_FILE}.tmp-`)) unlinkSync(join(dir, f));
    }
  } catch {
    // best effort
  }
}
