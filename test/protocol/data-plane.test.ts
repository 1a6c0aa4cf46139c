// The data plane's error mark: one vocabulary, read from flat header lists in any letter case.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dataPlaneErrorOf, dataPlaneErrors, ERROR_HEADER, isDataPlaneError } from '../../src/protocol/data-plane.ts';

test('dataPlaneErrorOf finds the mark in any letter case and ignores values outside the vocabulary', () => {
  assert.equal(ERROR_HEADER, 'x-shoal-error');
  assert.equal(dataPlaneErrorOf(['content-type', 'application/json', 'x-shoal-error', 'gone']), 'gone');
  assert.equal(dataPlaneErrorOf(['X-Shoal-Error', 'not-ready']), 'not-ready');
  assert.equal(dataPlaneErrorOf(['x-shoal-error', 'crashed']), undefined, 'not a known reason');
  assert.equal(dataPlaneErrorOf(['x-shoal-errors', 'gone', 'x-shoal-instance', 'gone']), undefined);
  assert.equal(dataPlaneErrorOf([]), undefined);
});

test('the vocabulary is small, distinct and checked by isDataPlaneError', () => {
  assert.equal(new Set(dataPlaneErrors).size, dataPlaneErrors.length);
  for (const reason of dataPlaneErrors) {
    assert.ok(isDataPlaneError(reason));
    assert.match(reason, /^[a-z-]+$/);
  }
  assert.equal(isDataPlaneError('Gone'), false);
});
