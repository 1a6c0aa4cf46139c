// The message-safety checker: JSON Schema compiled once, each case names the first
// offending value by JSON pointer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compileSchema } from '../../src/provider/json-schema.ts';

const order = {
  type: 'object',
  properties: {
    id: { type: 'string', pattern: '^o-[0-9]+$' },
    qty: { type: 'integer', minimum: 1, maximum: 99 },
    price: { type: 'number', exclusiveMinimum: 0, multipleOf: 0.01 },
    tags: { type: 'array', items: { type: 'string', minLength: 1, maxLength: 8 }, maxItems: 3, uniqueItems: true },
    kind: { enum: ['retail', 'trade'] },
    note: { type: ['string', 'null'] },
    address: { $ref: '#/$defs/address' },
  },
  required: ['id', 'qty'],
  additionalProperties: false,
  $defs: { address: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } },
};

const cases: Array<[string, unknown, unknown, string | undefined, RegExp?]> = [
  ['valid minimal', order, { id: 'o-1', qty: 1 }, undefined],
  ['valid full', order, { id: 'o-22', qty: 99, price: 12.5, tags: ['a', 'b'], kind: 'trade', note: null, address: { city: 'Cambridge' } }, undefined],
  ['not an object', order, [], '', /must be object, got array/],
  ['missing required', order, { id: 'o-1' }, '/qty', /is required/],
  ['wrong type', order, { id: 'o-1', qty: '3' }, '/qty', /must be integer, got string/],
  ['integer, not number', order, { id: 'o-1', qty: 1.5 }, '/qty', /must be integer/],
  ['below minimum', order, { id: 'o-1', qty: 0 }, '/qty', /≥ 1/],
  ['above maximum', order, { id: 'o-1', qty: 100 }, '/qty', /≤ 99/],
  ['exclusive minimum', order, { id: 'o-1', qty: 1, price: 0 }, '/price', /> 0/],
  ['multipleOf', order, { id: 'o-1', qty: 1, price: 1.234 }, '/price', /multiple of/],
  ['pattern', order, { id: 'x-1', qty: 1 }, '/id', /pattern/],
  ['unknown property', order, { id: 'o-1', qty: 1, extra: true }, '/extra', /not an allowed property/],
  ['array item', order, { id: 'o-1', qty: 1, tags: ['ok', ''] }, '/tags/1', /at least 1 characters/],
  ['too many items', order, { id: 'o-1', qty: 1, tags: ['a', 'b', 'c', 'd'] }, '/tags', /at most 3 items/],
  ['unique items', order, { id: 'o-1', qty: 1, tags: ['a', 'a'] }, '/tags/1', /duplicates/],
  ['enum', order, { id: 'o-1', qty: 1, kind: 'gift' }, '/kind', /one of \["retail","trade"\]/],
  ['type list', order, { id: 'o-1', qty: 1, note: 3 }, '/note', /must be string or null/],
  ['$ref', order, { id: 'o-1', qty: 1, address: {} }, '/address/city', /is required/],
  ['anyOf names the inner field', { anyOf: [{ type: 'object', properties: { a: { type: 'string' } }, required: ['a'] }, { type: 'string' }] }, { a: 1 }, '/a', /must be string/],
  ['oneOf: both', { oneOf: [{ type: 'integer' }, { type: 'number' }] }, 3, '', /more than one/],
  ['oneOf: one', { oneOf: [{ type: 'integer' }, { type: 'string' }] }, 3, undefined],
  ['allOf', { allOf: [{ type: 'object' }, { required: ['x'] }] }, {}, '/x', /is required/],
  ['not', { not: { type: 'string' } }, 'no', '', /not allowed/],
  ['const', { const: 'v1' }, 'v2', '', /must be "v1"/],
  ['if/then', { if: { properties: { kind: { const: 'trade' } } }, then: { required: ['vat'] } }, { kind: 'trade' }, '/vat', /is required/],
  ['if/else untouched', { if: { properties: { kind: { const: 'trade' } } }, then: { required: ['vat'] } }, { kind: 'retail' }, undefined],
  ['patternProperties', { type: 'object', patternProperties: { '^n_': { type: 'number' } }, additionalProperties: false }, { n_a: 1, b: 2 }, '/b', /not an allowed/],
  ['maxLength counts characters, not UTF-16 units', { type: 'string', maxLength: 2 }, '😀😀', undefined],
  ['field names with / are escaped', { type: 'object', properties: { 'a/b': { type: 'string' } } }, { 'a/b': 1 }, '/a~1b', /must be string/],
  ['true schema', true, { anything: 1 }, undefined],
  ['empty object schema', {}, 42, undefined],
  ['recursive $ref', { $defs: { node: { type: 'object', properties: { next: { $ref: '#/$defs/node' }, v: { type: 'integer' } } } }, $ref: '#/$defs/node' }, { v: 1, next: { v: 2, next: { v: 'x' } } }, '/next/next/v', /must be integer/],
];

for (const [name, schema, value, path, message] of cases) {
  test(`json schema: ${name}`, () => {
    const error = compileSchema(schema)(value);
    if (path === undefined) {
      assert.equal(error, undefined, JSON.stringify(error));
      return;
    }
    assert.ok(error, 'expected a failure');
    assert.equal(error.path, path);
    if (message) assert.match(error.message, message);
  });
}

test('json schema: a remote $ref or a bad pattern fails at compile time, not on a message', () => {
  assert.throws(() => compileSchema({ $ref: 'https://example.com/s.json' }), /only local references/);
  assert.throws(() => compileSchema({ $ref: '#/$defs/missing' }), /does not resolve/);
  assert.throws(() => compileSchema({ type: 'string', pattern: '(' }));
});
