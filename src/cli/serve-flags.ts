import type { ServeFlags } from '../config.js';
import { parseCommandArgs } from './args.js';

/** `serve`'s flags; src/config.ts layers them over the defaults and the config file. */
export const SERVE_OPTIONS = {
  listen: { type: 'string' },
  lan: { type: 'string', multiple: true },
  'lan-fill': { type: 'string', multiple: true },
  upstream: { type: 'string', multiple: true },
  'trusted-public-key': { type: 'string', multiple: true },
  'no-mdns': { type: 'boolean' },
  mdns: { type: 'boolean' },
  config: { type: 'string' },
  'log-level': { type: 'string' },
  'state-dir': { type: 'string' },
  priority: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export function parseServeFlags(argv: string[]): ServeFlags {
  return parseCommandArgs('serve', argv, SERVE_OPTIONS, false).values as ServeFlags;
}
