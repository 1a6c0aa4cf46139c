// Errors a service's handlers throw and its import clients raise. On the wire every
// error is `{"error":{"code","message","field"?}}` with an HTTP status; a handler may
// use the platform's codes (src/protocol/errors.ts) or its own ('card-declined').
import { errorBody, httpStatusFor, isErrorCode, ShoalError, type ErrorBody } from '../protocol/errors.ts';

/** A service's own code (not one of the platform's) that names no status is answered 422. */
export const DEFAULT_APPLICATION_STATUS = 422;

export interface ServiceErrorOptions {
  /** HTTP status of the reply, 400-599. Default: the platform code's status, else 422. */
  status?: number;
  detail?: unknown;
  cause?: unknown;
}

/** Thrown by a handler to answer with a structured error; raised by clients with the peer's error. */
export class ServiceError extends Error {
  readonly code: string;
  /** JSON pointer of the offending input field (`/card/number`), when there is one. */
  readonly field: string | undefined;
  readonly status: number;
  readonly detail: unknown;

  constructor(code: string, message: string, field?: string, options: ServiceErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ServiceError';
    this.code = code;
    this.field = field;
    this.detail = options.detail;
    const status = options.status ?? statusForCode(code);
    this.status = Number.isInteger(status) && status >= 400 && status <= 599 ? status : 500;
  }

  toJSON(): WireError {
    return errorBody(this);
  }
}

export type WireError = ErrorBody<string>;

export function statusForCode(code: string): number {
  return isErrorCode(code) ? httpStatusFor(code) : DEFAULT_APPLICATION_STATUS;
}

/**
 * What a thrown value becomes on the wire. ServiceError and ShoalError keep their code
 * and field; anything else is a bug in the handler: 500 `internal`.
 */
export function toServiceError(e: unknown, operation: string): ServiceError {
  if (e instanceof ServiceError) return e;
  if (e instanceof ShoalError) return new ServiceError(e.code, e.message, e.field, { detail: e.detail, cause: e });
  const message = e instanceof Error ? e.message : String(e);
  return new ServiceError('internal', `${operation} failed: ${message}`, undefined, { status: 500, cause: e });
}

/** Reads a peer's error reply; anything that is not one becomes a ServiceError naming the status. */
export function fromWire(status: number, text: string, describe: string): ServiceError {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  const error = typeof body === 'object' && body !== null ? (body as { error?: unknown }).error : undefined;
  if (typeof error === 'object' && error !== null) {
    const { code, message, field, detail } = error as Record<string, unknown>;
    if (typeof code === 'string' && typeof message === 'string') {
      return new ServiceError(code, message, typeof field === 'string' ? field : undefined, { status, detail });
    }
  }
  const code = status === 404 ? 'not-found' : status === 503 ? 'unavailable' : status === 504 ? 'timeout' : status >= 500 ? 'internal' : 'invalid';
  return new ServiceError(code, `${describe}: HTTP ${status}: ${text.slice(0, 200) || '(empty reply)'}`, undefined, { status });
}
