// What happens to a message whose instance crashed under it. Pure: the router asks,
// then retries on another instance or answers 502. Retrying is safe only when running
// the operation twice is harmless (idempotent) or when it never reached the instance.
import { ShoalError } from '../protocol/index.ts';

export interface RetryInput {
  /** The operation is declared idempotent in the service description. */
  idempotent: boolean;
  /** Attempts made so far, the failed one included (≥ 1). */
  attempts: number;
  /** Most attempts allowed in all (≥ 1; 1 means never retry). */
  maxAttempts: number;
  /**
   * Whether any of the message may have reached the instance. False only when the
   * connection failed before a byte was sent; then even a non-idempotent message is
   * safe to retry. Default true.
   */
  delivered?: boolean;
}

export type RetryDecision = 'retry' | 'fail-502';

export function retryDecision(input: RetryInput): RetryDecision {
  const { idempotent, attempts, maxAttempts, delivered = true } = input;
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1) {
    throw new ShoalError('invalid', `maxAttempts must be an integer ≥ 1, got ${maxAttempts}`, { field: 'maxAttempts' });
  }
  if (!Number.isInteger(attempts) || attempts < 1) {
    throw new ShoalError('invalid', `attempts must be an integer ≥ 1, got ${attempts}`, { field: 'attempts' });
  }
  if (attempts >= maxAttempts) return 'fail-502';
  return idempotent || !delivered ? 'retry' : 'fail-502';
}
