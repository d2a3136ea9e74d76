import type { Logger } from 'pino';
import { errorMessage } from '../errors.js';

/** Each of these stops a service gracefully; SIGHUP too (a closing terminal, `systemctl kill -s HUP`): docs/architecture.md. */
export const STOP_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;

/**
 * Runs a long-lived service (serve, fill) until SIGTERM, SIGINT or SIGHUP,
 * then closes it gracefully (at most 10 s; a second signal exits at once).
 * Stops are handled from the start: one asked for while starting happens
 * right after. A rejected promise nobody handled is a bug: it is logged at
 * fatal, the service stops gracefully (counters saved) and the process exits
 * 1, so the bug is seen and systemd restarts it. A service that cannot start
 * is logged and its error thrown. An uncaught exception (a bug, or a
 * dependency's: undici 7 died so on a flapping link) is logged at fatal with
 * its stack before Node ends the process with status 1; nothing catches it,
 * so nothing carries on in an unknown state (the units restart it at once).
 */
export async function runService<S extends { close(): Promise<void> }>(log: Logger, what: string, start: () => Promise<S>, onStarted: (service: S) => void = () => {}): Promise<number> {
  let requested: { why: string; code: number } | undefined;
  let requestStop: (why: string, code: number) => void = (why, code) => (requested ??= { why, code });
  const onSignal = (signal: NodeJS.Signals) => requestStop(signal, 0);
  const onRejection = (err: unknown) => {
    log.fatal({ err, event: 'bug' }, `unhandled promise rejection: this is a bug in nix-lan-cache; stopping ${what}`);
    requestStop('unhandled promise rejection', 1);
  };
  // An exception nothing caught ends the process as Node ends it (status 1; systemd restarts it): this only
  // says why first, with its stack, in the service's own log (stderr is synchronous: the line is out before exit).
  const onCrash = (err: Error, origin: string) => {
    log.fatal({ err, event: 'crash', origin }, `${what} is dying of an uncaught exception: ${errorMessage(err)}`);
  };
  const detach = () => {
    for (const s of STOP_SIGNALS) process.off(s, onSignal);
    process.off('unhandledRejection', onRejection);
    process.off('uncaughtExceptionMonitor', onCrash);
  };
  for (const s of STOP_SIGNALS) process.on(s, onSignal);
  process.on('unhandledRejection', onRejection);
  process.on('uncaughtExceptionMonitor', onCrash);
  let service: S;
  try {
    service = await start();
  } catch (err) {
    log.fatal({ event: 'start-failed', err: errorMessage(err) }, `${what} did not start: ${errorMessage(err)}`);
    detach();
    throw err;
  }
  onStarted(service);

  const code = await new Promise<number>((resolve) => {
    requestStop = (why, exitCode) => {
      // While stopping, a second signal ends the process at once; anything else waits for the stop.
      requestStop = (again) => {
        if ((STOP_SIGNALS as readonly string[]).includes(again)) process.exit(1);
      };
      log.info({ event: 'shutdown', signal: why }, 'shutting down');
      const force = setTimeout(() => process.exit(1), 10_000);
      force.unref();
      service.close().then(
        () => resolve(exitCode),
        (err: unknown) => {
          log.error({ err }, 'error during shutdown');
          resolve(1);
        },
      );
    };
    if (requested) requestStop(requested.why, requested.code);
  });
  detach();
  return code;
}
