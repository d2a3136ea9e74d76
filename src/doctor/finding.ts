export type Level = 'ok' | 'info' | 'warn' | 'fail';

export interface Finding {
  /** Stable id for scripts and tests, e.g. `substituter-lan-direct`. */
  id: string;
  level: Level;
  message: string;
  /** What to do about it (for warn and fail). */
  fix?: string;
}
