import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ShoalError, codeForStatus, errorCodes, errorReply, exitCodeFor, httpStatusFor } from '../../src/protocol/errors.ts';

test('errorReply: a ShoalError becomes its status from the table and the wire body', () => {
  const cases: Array<[ShoalError, number]> = [
    [new ShoalError('invalid', 'bad name', { field: 'name' }), 400],
    [new ShoalError('not-found', 'no service x'), 404],
    [new ShoalError('method-not-allowed', 'use POST', { field: 'method' }), 405],
    [new ShoalError('conflict', 'taken'), 409],
    [new ShoalError('bad-gateway', 'instance gone'), 502],
    [new ShoalError('unavailable', 'queue full', { detail: { queued: 3 } }), 503],
    [new ShoalError('timeout', 'too slow'), 504],
  ];
  for (const [error, status] of cases) {
    const reply = errorReply(error);
    assert.equal(reply.status, status, error.code);
    assert.deepEqual(reply.body, {
      error: {
        code: error.code,
        message: error.message,
        ...(error.field === undefined ? {} : { field: error.field }),
        ...(error.detail === undefined ? {} : { detail: error.detail }),
      },
    });
  }
});

test('errorReply: anything else is a bug, answered 500 internal with its message', () => {
  assert.deepEqual(errorReply(new TypeError('x is undefined')), { status: 500, body: { error: { code: 'internal', message: 'x is undefined' } } });
  assert.deepEqual(errorReply('thrown string'), { status: 500, body: { error: { code: 'internal', message: 'thrown string' } } });
});

test('every code has an HTTP status and a CLI exit code', () => {
  for (const code of errorCodes) {
    assert.ok(httpStatusFor(code) >= 400 && httpStatusFor(code) < 600, code);
    assert.ok(exitCodeFor(code) >= 1, code);
  }
});

test('codeForStatus reads the table backwards for replies without a code of their own', () => {
  for (const code of errorCodes) assert.equal(httpStatusFor(codeForStatus(httpStatusFor(code))), httpStatusFor(code), code);
  assert.equal(codeForStatus(400), 'invalid');
  assert.equal(codeForStatus(404), 'not-found');
  assert.equal(codeForStatus(502), 'bad-gateway');
  assert.equal(codeForStatus(418), 'invalid');
  assert.equal(codeForStatus(599), 'unavailable');
});
