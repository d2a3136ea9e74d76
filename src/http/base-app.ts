import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { AppError } from '../errors.js';
import { errorHandler } from './errors.js';
import { hasDotSegment, MAX_URL_LENGTH } from './paths.js';

/**
 * A fastify instance with what every nix-lan-cache HTTP service shares (the
 * proxy, fill): long URLs and dot segments refused before routing, one
 * error mapping, a debug line per request, graceful close.
 */
export function baseApp(log: Logger): FastifyInstance {
  const app = Fastify({
    loggerInstance: log as FastifyBaseLogger,
    // One line per request, at debug, from the onResponse hook below.
    logController: new LogController({ disableRequestLogging: true }),
    routerOptions: { maxParamLength: MAX_URL_LENGTH },
    // Bad URLs and over-long params are rejected by the router before any hook: answer them the same way.
    frameworkErrors: (err, req, reply) => errorHandler(err, req, reply),
    // Nix keeps connections open; let in-flight NARs finish on shutdown but don't wait on idle sockets.
    forceCloseConnections: 'idle',
    return503OnClosing: true,
  });
  // Callback style, not async: no promise per request.
  app.addHook('onRequest', (req, _reply, done) => {
    if (req.url.length > MAX_URL_LENGTH) return done(new AppError('URI_TOO_LONG', `request URL is longer than ${MAX_URL_LENGTH} bytes`));
    if (hasDotSegment(req.url)) return done(new AppError('BAD_PATH', 'path segments "." and ".." are not allowed'));
    done();
  });
  // A hook costs every request a promise and a turn through fastify's hook runner: add it only when it logs.
  if (log.isLevelEnabled('debug')) {
    app.addHook('onResponse', async (req, reply) => {
      req.log.debug({ method: req.method, url: req.url, status: reply.statusCode, ms: Math.round(reply.elapsedTime) }, 'request');
    });
  }
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((req) => {
    throw new AppError('NOT_FOUND', `no such route: ${req.method} ${req.url.slice(0, 200)}`);
  });
  return app;
}
