// The data plane's wire marks, shared by the host's forwarder (which sets them) and the
// provider's router (which reads them).

/** The route token travels in this request header; it is never passed to an instance. */
export const ROUTE_HEADER = 'x-shoal-route';

/** The forwarder names the instance that answered (or would have) in this reply header. */
export const INSTANCE_HEADER = 'x-shoal-instance';

/**
 * Every reply the host makes itself, rather than relays from an instance, carries this
 * header with one of `dataPlaneErrors`. The forwarder strips it from instances' replies,
 * so a reply that has it was made by the host: callers decide from it, never from the
 * body's text.
 */
export const ERROR_HEADER = 'x-shoal-error';

export const dataPlaneErrors = [
  'no-route', // 404: a path outside /i
  'bad-path', // 400: an import socket refused the request path
  'token', // 401/403: the route token is missing, malformed, forged or expired
  'operation', // 403: the route token is valid but does not reach this path (an operation the service did not declare)
  'gone', // 404: the instance is not on this host; it never saw the request
  'not-ready', // 503: the instance is starting, paused or stopping; it never saw the request
  'too-large', // 413: the request body is over the limit
  'refused', // 502: the instance's socket refused the connection or is missing; nothing was delivered
  'lost', // 502: the connection failed or closed before a complete reply; the request may have been delivered
  'bad-reply', // 502: the instance sent an invalid HTTP reply
  'timeout', // 504: the instance stayed silent past the limit
] as const;

export type DataPlaneError = (typeof dataPlaneErrors)[number];

const DATA_PLANE_ERRORS: ReadonlySet<string> = new Set(dataPlaneErrors);

/** Whether a value read off the wire is one of the marks above. */
export function isDataPlaneError(value: string): value is DataPlaneError {
  return DATA_PLANE_ERRORS.has(value);
}

/** The host's mark in a flat [name, value, …] header list, if it has a known one. */
export function dataPlaneErrorOf(headers: readonly string[]): DataPlaneError | undefined {
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!;
    if (name.length === ERROR_HEADER.length && name.toLowerCase() === ERROR_HEADER) {
      const value = headers[i + 1]!;
      return isDataPlaneError(value) ? value : undefined;
    }
  }
  return undefined;
}
