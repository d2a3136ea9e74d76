import type { Logger } from 'pino';

/**
 * Runs a long-lived service (serve, fill) until SIGTERM or SIGINT, then
 * closes it gracefully (at most 10 s; a second signal exits at once).
 * Signals are handled from the start: one that arrives while starting stops
 * it right after. A rejected promise nobody awaited is a bug, but not one
 * that should take the service down: it is logged.
 */
export async function runService<S extends { close(): Promise<void> }>(log: Logger, what: string, start: () => Promise<S>, onStarted: (service: S) => void = () => {}): Promise<number> {
  let signalled: NodeJS.Signals | undefined;
  let onSignal: (signal: NodeJS.Signals) => void = (signal) => (signalled = signal);
  const handler = (signal: NodeJS.Signals) => onSignal(signal);
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
  process.on('unhandledRejection', (err) => log.error({ err, event: 'bug' }, `unhandled promise rejection; ${what} keeps running`));
  const service = await start();
  onStarted(service);
  await new Promise<void>((resolve) => {
    onSignal = (signal) => {
      onSignal = () => process.exit(1); // a second signal ends the process at once
      log.info({ event: 'shutdown', signal }, 'shutting down');
      const force = setTimeout(() => process.exit(1), 10_000);
      force.unref();
      service.close().then(resolve, (err: unknown) => {
        log.error({ err }, 'error during shutdown');
        resolve();
      });
    };
    if (signalled) onSignal(signalled);
  });
  process.off('SIGTERM', handler);
  process.off('SIGINT', handler);
  return 0;
}
