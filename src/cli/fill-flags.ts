import type { FillFlags } from '../fill/config.js';
import { parseCommandArgs } from './args.js';

/** `fill`'s flags; src/fill/config.ts layers them over the defaults and the config file. */
export const FILL_OPTIONS = {
  cache: { type: 'string' },
  'spool-dir': { type: 'string' },
  listen: { type: 'string' },
  upstream: { type: 'string', multiple: true },
  'trusted-public-key': { type: 'string', multiple: true },
  'max-size': { type: 'string' },
  config: { type: 'string' },
  'log-level': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export function parseFillFlags(argv: string[]): FillFlags {
  return parseCommandArgs('fill', argv, FILL_OPTIONS, false).values as FillFlags;
}
