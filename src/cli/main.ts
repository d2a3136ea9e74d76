#!/usr/bin/env node
import { ConfigError, errorMessage } from '../errors.js';
import { ensureMemorySettings } from './memory.js';

/** Each command lives in its own module and is loaded only when it runs. */
type Command = { summary: string; load: () => Promise<{ run(argv: string[]): Promise<number> }>; service?: boolean };

const COMMANDS: Record<string, Command> = {
  serve: { summary: 'run the localhost substituter proxy', load: () => import('./serve.js'), service: true },
  announce: { summary: 'announce a static binary cache on the LAN with mDNS (for a Pi without Avahi)', load: () => import('./announce.js') },
  stats: { summary: 'show hit rates, bytes per origin and origin health of a running proxy', load: () => import('./stats.js') },
  doctor: { summary: 'check that Nix, the proxy and the caches fit together; print fixes', load: () => import('./doctor.js') },
  push: { summary: 'push closures into a static binary cache (dir or ssh://)', load: () => import('./push.js') },
  fill: { summary: 'on the Pi, behind nginx: fill the static cache from upstream on a miss', load: () => import('./fill.js'), service: true },
  gc: { summary: 'delete what no kept root needs from a static binary cache', load: () => import('./gc.js') },
  verify: { summary: 'check a static binary cache: NARs, hashes, signatures, orphans', load: () => import('./verify.js') },
};

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return `usage: nix-lan-cache <command> [options]\n\ncommands:\n${lines.join('\n')}\n\nRun nix-lan-cache <command> --help for a command's options.\n`;
}

async function main(argv: string[]): Promise<number> {
  // libuv's threadpool (4 threads by default) runs DNS lookups, zlib (zstd NARs) and fs work. Four lookups
  // hanging on a network that drops everything would stall every zstd NAR behind them; 16 threads keep
  // them apart (docs/dependencies.md). Read once, when the pool first starts: before any command loads.
  process.env.UV_THREADPOOL_SIZE ??= '16';
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage());
    return name ? 0 : 2;
  }
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`nix-lan-cache: unknown command ${JSON.stringify(name)}\n\n${usage()}`);
    return 2;
  }
  // The services run for days: their memory settings are theirs to set (cli/memory.ts); this may re-execute.
  if (command.service) ensureMemorySettings();
  return (await command.load()).run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`nix-lan-cache: ${errorMessage(err)}\n`);
    if (!(err instanceof ConfigError) && process.env.NIX_LAN_CACHE_DEBUG) console.error(err);
    process.exitCode = err instanceof ConfigError ? 2 : 1;
  },
);
