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
  share: { type: 'boolean' },
  'no-share': { type: 'boolean' },
  'share-listen': { type: 'string' },
  'share-store': { type: 'string' },
  'share-allow': { type: 'string', multiple: true },
  peer: { type: 'string', multiple: true },
  'peer-order': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export function parseServeFlags(argv: string[]): ServeFlags {
  return parseCommandArgs('serve', argv, SERVE_OPTIONS, false).values as ServeFlags;
}
