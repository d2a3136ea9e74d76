/**
 * Every error the proxy answers with is one of these codes; `toHttp` in
 * http/errors.ts maps them to responses in one place.
 */
export const ERROR_STATUS = {
  BAD_HASH: 400,
  BAD_PATH: 400,
  BAD_RANGE: 416,
  URI_TOO_LONG: 414,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  /** Every origin that could have it answered "absent". */
  NOT_IN_ANY_ORIGIN: 404,
  /** No origin has it and at least one could not be asked: Nix retries a 503. */
  ORIGINS_UNAVAILABLE: 503,
  /** A NAR that started streaming could not be finished from any origin. */
  NAR_INTERRUPTED: 502,
  /** The share (docs/sharing.md): a client outside the allowed networks; over its limits; the store's database unreadable. */
  FORBIDDEN: 403,
  TOO_MANY_REQUESTS: 429,
  STORE_UNAVAILABLE: 503,
  INTERNAL: 500,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export class AppError extends Error {
  override name = 'AppError';
  readonly status: number;

  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.status = ERROR_STATUS[code];
  }
}

/**
 * A command line or configuration that cannot run: the command prints the
 * message without a stack trace and exits 2. Not an HTTP error: a request
 * never sees one (errors of requests are AppErrors).
 */
export class ConfigError extends Error {
  override name = 'ConfigError';
  readonly exitCode = 2;
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' && !err.message.includes(code) ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}
