// Error categories shared by every part. Parts throw a ShoalError with one of these
// codes (there is no Result type: a failure between parts is a thrown ShoalError, a bug
// is any other exception); only the edges turn a code into a reply: HTTP servers
// through errorReply (the status table below), the CLI through exitCodeFor.
// (containerd's errdefs, Knative's "status only at the edge".)

export const errorCodes = [
  'invalid', // the caller sent something malformed; `field` names what
  'not-found',
  'conflict', // state forbids it now (name taken, capacity exhausted)
  'unauthorized', // no or wrong credentials
  'forbidden', // credentials fine, action refused (forged token)
  'too-large',
  'digest-mismatch', // content does not hash to the digest it claims
  'unsupported', // a media type, algorithm or feature we do not handle
  'unavailable', // try again later (queue full, dependency down)
  'bad-gateway', // the instance or host a message went to failed or answered nonsense
  'method-not-allowed',
  'timeout',
  'internal',
] as const;

export type ErrorCode = (typeof errorCodes)[number];

const ERROR_CODES: ReadonlySet<string> = new Set(errorCodes);

/** Whether a code from the wire is one of the platform's (services may use their own). */
export function isErrorCode(code: string): code is ErrorCode {
  return ERROR_CODES.has(code);
}

export class ShoalError extends Error {
  readonly code: ErrorCode;
  /** JSON-pointer-ish path of the offending input field, when there is one. */
  readonly field: string | undefined;
  readonly detail: unknown;

  constructor(code: ErrorCode, message: string, options: { field?: string; detail?: unknown; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ShoalError';
    this.code = code;
    this.field = options.field;
    this.detail = options.detail;
  }

  toJSON(): ErrorBody {
    return errorBody(this);
  }
}

/** The JSON body of every non-2xx reply; a service's own errors may carry their own codes. */
export interface ErrorBody<Code extends string = ErrorCode> {
  error: { code: Code; message: string; field?: string; detail?: unknown };
}

/** The wire form of an error: absent field and detail are left out, not null. */
export function errorBody<Code extends string>(e: { code: Code; message: string; field?: string | undefined; detail?: unknown }): ErrorBody<Code> {
  return {
    error: {
      code: e.code,
      message: e.message,
      ...(e.field === undefined ? {} : { field: e.field }),
      ...(e.detail === undefined ? {} : { detail: e.detail }),
    },
  };
}

export function isShoalError(e: unknown): e is ShoalError {
  return e instanceof ShoalError;
}

export function httpStatusFor(code: ErrorCode): number {
  switch (code) {
    case 'invalid':
    case 'digest-mismatch':
      return 400;
    case 'unauthorized':
      return 401;
    case 'forbidden':
      return 403;
    case 'not-found':
      return 404;
    case 'method-not-allowed':
      return 405;
    case 'conflict':
      return 409;
    case 'too-large':
      return 413;
    case 'unsupported':
      return 415;
    case 'internal':
      return 500;
    case 'bad-gateway':
      return 502;
    case 'unavailable':
      return 503;
    case 'timeout':
      return 504;
    default: {
      const never: never = code;
      return never;
    }
  }
}

/**
 * The code of a reply that carried none of its own (a proxy's error page, an empty body):
 * the table read backwards; other 5xx are `unavailable`, other 4xx `invalid`.
 */
export function codeForStatus(status: number): ErrorCode {
  for (const code of errorCodes) if (httpStatusFor(code) === status) return code;
  return status >= 500 ? 'unavailable' : 'invalid';
}

/** CLI exit codes: 1 generic failure, 2 usage/invalid input, 3 not found, 4 conflict, 5 unavailable. */
export function exitCodeFor(code: ErrorCode): number {
  switch (code) {
    case 'invalid':
    case 'digest-mismatch':
    case 'too-large':
    case 'unsupported':
    case 'method-not-allowed':
      return 2;
    case 'not-found':
      return 3;
    case 'conflict':
      return 4;
    case 'unavailable':
    case 'bad-gateway':
    case 'timeout':
      return 5;
    case 'unauthorized':
    case 'forbidden':
      return 6;
    case 'internal':
      return 1;
    default: {
      const never: never = code;
      return never;
    }
  }
}

/** An error as an HTTP edge replies with it. */
export interface HttpErrorReply {
  status: number;
  body: ErrorBody;
}

/**
 * The one way an error becomes a reply: a ShoalError's code gives the status (the table
 * above); anything else is a bug, answered 500 `internal` with its message.
 */
export function errorReply(error: unknown): HttpErrorReply {
  const e = isShoalError(error) ? error : new ShoalError('internal', error instanceof Error ? error.message : String(error));
  return { status: httpStatusFor(e.code), body: errorBody(e) };
}
