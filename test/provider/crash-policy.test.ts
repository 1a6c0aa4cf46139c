import { test } from 'node:test';
import assert from 'node:assert/strict';
import { retryDecision, type RetryDecision, type RetryInput } from '../../src/provider/crash-policy.ts';

test('retryDecision: idempotent messages retry until maxAttempts, others fail with 502', () => {
  const cases: Array<[string, RetryInput, RetryDecision]> = [
    ['idempotent, first failure', { idempotent: true, attempts: 1, maxAttempts: 3 }, 'retry'],
    ['idempotent, second failure', { idempotent: true, attempts: 2, maxAttempts: 3 }, 'retry'],
    ['idempotent, out of attempts', { idempotent: true, attempts: 3, maxAttempts: 3 }, 'fail-502'],
    ['idempotent, past the limit', { idempotent: true, attempts: 7, maxAttempts: 3 }, 'fail-502'],
    ['idempotent, retries disabled', { idempotent: true, attempts: 1, maxAttempts: 1 }, 'fail-502'],
    ['not idempotent, in flight', { idempotent: false, attempts: 1, maxAttempts: 3 }, 'fail-502'],
    ['not idempotent, delivered said outright', { idempotent: false, attempts: 1, maxAttempts: 3, delivered: true }, 'fail-502'],
    ['not idempotent, never reached the instance', { idempotent: false, attempts: 1, maxAttempts: 3, delivered: false }, 'retry'],
    ['never reached it, but out of attempts', { idempotent: false, attempts: 3, maxAttempts: 3, delivered: false }, 'fail-502'],
  ];
  for (const [name, input, want] of cases) assert.equal(retryDecision(input), want, name);
});

test('retryDecision refuses nonsense counts, naming the field', () => {
  const cases: Array<[RetryInput, string]> = [
    [{ idempotent: true, attempts: 1, maxAttempts: 0 }, 'maxAttempts'],
    [{ idempotent: true, attempts: 1, maxAttempts: 2.5 }, 'maxAttempts'],
    [{ idempotent: true, attempts: 0, maxAttempts: 3 }, 'attempts'],
    [{ idempotent: true, attempts: Number.NaN, maxAttempts: 3 }, 'attempts'],
  ];
  for (const [input, field] of cases) {
    assert.throws(() => retryDecision(input), (e: unknown) => (e as { field?: string }).field === field, field);
  }
});
