// Registry writes that must not stop their caller must still never fail unseen: these
// helpers log a failed write with what it was and its context. A conditional write
// (ifState) refused with 'conflict' is no failure: someone else recorded it first.
import { isShoalError } from '../protocol/index.ts';
import type { Logger } from './logger.ts';

/** A catch handler: logs the failed write (error level: the durable record is now behind). */
export function logWriteFailure(log: Logger, what: string, context: object): (e: unknown) => undefined {
  return (e) => {
    log.error({ ...context, err: errorText(e) }, `registry write failed: ${what}`);
    return undefined;
  };
}

/**
 * Runs a conditional write: true when it applied, false when the condition did not hold
 * ('conflict'), or when it failed (logged).
 */
export function conditionalWrite(write: Promise<unknown>, log: Logger, what: string, context: object): Promise<boolean> {
  return write.then(
    () => true,
    (e: unknown) => {
      if (!(isShoalError(e) && e.code === 'conflict')) logWriteFailure(log, what, context)(e);
      return false;
    },
  );
}

/** Logs a failed call to a host that the caller can do without (listing, removing a leftover). */
export function logHostFailure(log: Logger, what: string, context: object): (e: unknown) => undefined {
  return (e) => {
    log.warn({ ...context, err: errorText(e) }, `${what} failed`);
    return undefined;
  };
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
