import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import type { ServerResponse } from 'node:http';
import { AppError, ERROR_STATUS, type ErrorCode } from '../errors.js';

export interface ErrorBody {
  error: ErrorCode;
  message: string;
}

/** The one place an error becomes an HTTP response. */
export function toHttp(err: unknown): { status: number; body: ErrorBody } {
  if (err instanceof AppError) return { status: err.status, body: { error: err.code, message: err.message } };
  const fe = err as Partial<FastifyError>;
  const status = typeof fe.statusCode === 'number' ? fe.statusCode : 500;
  if (status === 414) return { status, body: { error: 'URI_TOO_LONG', message: 'request URL is too long' } };
  if (status === 404) return { status, body: { error: 'NOT_FOUND', message: 'no such route' } };
  if (status >= 400 && status < 500) return { status, body: { error: 'BAD_PATH', message: fe.message ?? 'bad request' } };
  return { status: ERROR_STATUS.INTERNAL, body: { error: 'INTERNAL', message: 'internal error' } };
}

export function errorHandler(err: unknown, req: FastifyRequest, reply: FastifyReply): void {
  const { status, body } = toHttp(err);
  if (status >= 500) req.log.error({ err, url: req.url }, 'request failed');
  else req.log.debug({ url: req.url, error: body.error }, body.message);
  void reply.code(status).type('application/json').send(body);
}

/** For hijacked responses (NAR streams) that fail before their head is written. */
export function writeRawError(res: ServerResponse, err: AppError): void {
  const { status, body } = toHttp(err);
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
