import { parseCommandArgs } from './args.js';
import { hostname } from 'node:os';
import { isIPv4 } from 'node:net';
import type { LevelWithSilent } from 'pino';
import { ConfigError } from '../errors.js';
import { Publisher } from '../discovery/publisher.js';
import { createLogger, LOG_LEVELS } from '../log.js';

const HELP = `usage: nix-lan-cache announce --port P --key-name NAME [options]

Announces a static binary cache on the LAN with mDNS/DNS-SD (service type
_nix-cache._tcp; see docs/discovery.md), for a Pi without Avahi. Runs until
SIGTERM or SIGINT, then says goodbye so proxies drop the cache at once.

  --port P             the HTTP port the cache is served on (required)
  --key-name NAME      the name part of the key that signs the cache, e.g.
                       pi.lan-1 (required; proxies that don't trust a key by
                       that name ignore the cache)
  --path /PATH/        URL path of the cache root (default /)
  --priority N         lower wins when several caches answer (optional)
  --fill               the cache fills itself from upstream on a miss
                       (nix-lan-cache fill runs behind it): adds fill=1
  --interface ADDR     announce on this IPv4 address only (default: all)
  --name NAME          the service instance name (default "nix-cache on HOST")
  --host NAME          the host name in the SRV record (default HOST.local)
  --log-level LEVEL    fatal|error|warn|info|debug|trace|silent
`;

export interface AnnounceOptions {
  port: number;
  keyName: string;
  path: string;
  priority: number | undefined;
  /** `nix-lan-cache fill` runs behind the cache: announced as `fill=1`. */
  fill: boolean;
  interface: string | undefined;
  name: string;
  host: string;
  logLevel: LevelWithSilent;
}

export function parseAnnounceFlags(argv: string[]): AnnounceOptions | 'help' {
  const values: Record<string, string | boolean | undefined> = parseCommandArgs(
    'announce',
    argv,
    {
      port: { type: 'string' },
      'key-name': { type: 'string' },
      path: { type: 'string' },
      priority: { type: 'string' },
      fill: { type: 'boolean' },
      interface: { type: 'string' },
      name: { type: 'string' },
      host: { type: 'string' },
      'log-level': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    false,
  ).values;
  if (values.help) return 'help';
  const str = (k: string) => (typeof values[k] === 'string' ? (values[k] as string) : undefined);
  const portText = str('port');
  if (!portText || !/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) throw new ConfigError('--port must be a TCP port (1-65535)');
  const keyName = str('key-name');
  if (!keyName || /[\s:=]/.test(keyName)) throw new ConfigError('--key-name must be the name part of the signing key (e.g. pi.lan-1), without spaces, ":" or "="');
  let path = str('path') ?? '/';
  if (!path.startsWith('/') || !/^\/[A-Za-z0-9._~\-/%]*$/.test(path) || path.split('/').some((s) => s === '..' || s === '.')) throw new ConfigError(`--path must be a plain URL path starting with "/", got ${JSON.stringify(path)}`);
  if (!path.endsWith('/')) path += '/';
  const priorityText = str('priority');
  if (priorityText !== undefined && !/^\d{1,4}$/.test(priorityText)) throw new ConfigError('--priority must be an integer from 0 to 9999');
  const iface = str('interface');
  if (iface !== undefined && !isIPv4(iface)) throw new ConfigError(`--interface must be an IPv4 address of this machine, got ${JSON.stringify(iface)}`);
  const level = str('log-level') ?? 'info';
  if (!(LOG_LEVELS as readonly string[]).includes(level)) throw new ConfigError(`log level must be one of ${LOG_LEVELS.join(', ')}`);
  const host = hostname().split('.')[0] || 'nix-cache';
  return {
    port: Number(portText),
    keyName,
    path,
    priority: priorityText === undefined ? undefined : Number(priorityText),
    fill: values.fill === true,
    interface: iface,
    name: str('name') ?? `nix-cache on ${host}`,
    host: str('host') ?? `${host}.local`,
    logLevel: level as LevelWithSilent,
  };
}

/** The TXT records of the contract (docs/discovery.md). */
export function txtRecords(o: Pick<AnnounceOptions, 'path' | 'keyName' | 'priority'> & { fill?: boolean }): Record<string, string> {
  return { path: o.path, key: o.keyName, ...(o.priority === undefined ? {} : { priority: String(o.priority) }), ...(o.fill ? { fill: '1' } : {}) };
}

export async function run(argv: string[]): Promise<number> {
  const options = parseAnnounceFlags(argv);
  if (options === 'help') {
    process.stdout.write(HELP);
    return 0;
  }
  const log = createLogger(options.logLevel);
  const publisher = new Publisher({ name: options.name, type: 'nix-cache', port: options.port, host: options.host, txt: txtRecords(options), address: options.interface }, log);

  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  log.info({ event: 'shutdown', signal }, 'sending goodbye');
  await publisher.stop();
  return publisher.failed ? 1 : 0;
}
