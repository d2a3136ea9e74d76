import { pino, type Logger, type LevelWithSilent } from 'pino';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/**
 * pino JSON lines by default (for journald and log shippers); readable lines
 * when writing to a terminal, or with NIX_LAN_CACHE_LOG_FORMAT=pretty.
 */
export function createLogger(level: LevelWithSilent, destination: NodeJS.WritableStream = process.stderr): Logger {
  const format = process.env.NIX_LAN_CACHE_LOG_FORMAT;
  const pretty = format === 'pretty' || (format !== 'json' && (destination as { isTTY?: boolean }).isTTY === true);
  if (pretty) {
    return pino({
      level,
      transport: { target: 'pino-pretty', options: { destination: 2, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } },
    });
  }
  return pino({ level, base: { pid: process.pid } }, destination as pino.DestinationStream);
}
