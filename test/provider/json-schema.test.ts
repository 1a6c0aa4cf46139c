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
  ['below minimum', order, { id: 'o-1', qty: 0 }, '/qty', />= 1/],
  ['above maximum', order, { id: 'o-1', qty: 100 }, '/qty', /<= 99/],
  ['exclusive minimum', order, { id: 'o-1', qty: 1, price: 0 }, '/price', /> 0/],
  ['multipleOf', order, { id: 'o-1', qty: 1, price: 1.234 }, '/price', /multiple of/],
  ['pattern', order, { id: 'x-1', qty: 1 }, '/id', /pattern/],
  ['unknown property', order, { id: 'o-1', qty: 1, extra: true }, '/extra', /not an allowed property/],
  ['array item', order, { id: 'o-1', qty: 1, tags: ['ok', ''] }, '/tags/1', /fewer than 1 characters/],
  ['too many items', order, { id: 'o-1', qty: 1, tags: ['a', 'b', 'c', 'd'] }, '/tags', /more than 3 items/],
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
  assert.throws(() => compileSchema({ $ref: 'https://example.com/s.json' }), /can't resolve reference/);
  assert.throws(() => compileSchema({ $ref: '#/$defs/missing' }), /can't resolve reference/);
  assert.throws(() => compileSchema({ type: 'string', pattern: '(' }));
});

// ---- issue 9, item 5: nothing a registrant or a sender writes can stop or stall the checker ----

test('json schema: unevaluatedProperties and dependentSchemas are enforced, not ignored', () => {
  const closed = { type: 'object', allOf: [{ properties: { a: { type: 'string' } } }], unevaluatedProperties: false };
  assert.equal(compileSchema(closed)({ a: 'x' }), undefined);
  assert.deepEqual(compileSchema(closed)({ a: 'x', b: 1 }), { path: '/b', message: 'is not an allowed property' });
  const dependent = { type: 'object', dependentSchemas: { card: { required: ['cvv'] } } };
  assert.equal(compileSchema(dependent)({ other: 1 }), undefined);
  assert.equal(compileSchema(dependent)({ card: '4111' })?.path, '/cvv');
});

test('json schema: a keyword that would not be enforced is refused at compile time', () => {
  assert.throws(() => compileSchema({ type: 'string', maxLenght: 3 }), /unknown keyword: "maxLenght"/);
  assert.throws(() => compileSchema({ type: 'object', properties: { a: { 'x-internal': true } } }), /unknown keyword/);
  assert.throws(() => compileSchema({ type: 'string', format: 'email' }), /unknown format "email"/);
  assert.throws(() => compileSchema({ $schema: 'http://json-schema.org/draft-04/schema#', type: 'string' }), /draft-04/);
  assert.throws(() => compileSchema('string'), /not a schema/);
});

test('json schema: patterns run in linear time; ones RE2 cannot run that way are refused', () => {
  // ^(a+)+$ against 30 a's and a '!' backtracks ~2^30 steps on a backtracking engine.
  const check = compileSchema({ type: 'object', properties: { s: { type: 'string', pattern: '^(a+)+$' } } });
  assert.equal(check({ s: `${'a'.repeat(30)}!` })?.path, '/s');
  assert.equal(check({ s: 'a'.repeat(30) }), undefined);
  const keys = compileSchema({ type: 'object', patternProperties: { '^(a|aa)+$': { type: 'integer' } }, additionalProperties: false });
  assert.equal(keys({ [`${'a'.repeat(40)}b`]: 1 })?.message, 'is not an allowed property');
  assert.throws(() => compileSchema({ type: 'string', pattern: '(a)\\1' }), /cannot be matched in linear time/);
  assert.throws(() => compileSchema({ type: 'string', pattern: '(?=a)a' }), /cannot be matched in linear time/);
  assert.throws(() => compileSchema({ type: 'string', pattern: '(' }), /cannot be matched in linear time|error parsing/);
});

test('json schema: a value nested deeper than the bound is refused before it is walked', () => {
  const tree = { $defs: { node: { type: 'object', properties: { next: { $ref: '#/$defs/node' } } } }, $ref: '#/$defs/node' };
  const check = compileSchema(tree);
  const n = 20_000;
  const deep = JSON.parse(`${'{"next":'.repeat(n)}{}${'}'.repeat(n)}`);
  assert.deepEqual(check(deep), { path: '', message: 'is nested deeper than 64 levels' });
  const ok = JSON.parse(`${'{"next":'.repeat(60)}{}${'}'.repeat(60)}`);
  assert.equal(check(ok), undefined);
  assert.equal(compileSchema(tree, { maxDepth: 10 })(ok)?.message, 'is nested deeper than 10 levels');
  // Arrays count as levels too, and so do values the schema does not constrain.
  assert.equal(compileSchema(true)(JSON.parse(`${'['.repeat(100)}${']'.repeat(100)}`))?.message, 'is nested deeper than 64 levels');
});

test('json schema: uniqueItems over objects needs a bound (pairwise comparison is quadratic)', () => {
  assert.throws(() => compileSchema({ type: 'array', items: { type: 'object' }, uniqueItems: true }), /uniqueItems needs/);
  assert.throws(() => compileSchema({ type: 'object', properties: { l: { type: 'array', uniqueItems: true } } }), /#\/properties\/l: uniqueItems/);
  assert.equal(compileSchema({ type: 'array', items: { type: 'object' }, uniqueItems: true, maxItems: 100 })([{ a: 1 }, { a: 2 }]), undefined);
  assert.equal(compileSchema({ type: 'array', items: { type: 'string' }, uniqueItems: true })(['a', 'a'])?.path, '/1');
});

test('json schema: two schemas with one $id compile independently', () => {
  const a = compileSchema({ $id: 'https://example.com/in', type: 'string' });
  const b = compileSchema({ $id: 'https://example.com/in', type: 'integer' });
  assert.equal(a('x'), undefined);
  assert.equal(b(1), undefined);
  assert.ok(b('x'));
});

test('json schema: draft-07 tuples (as TypeBox 0.34 writes them) still register and are enforced', () => {
  const tuple = { type: 'array', items: [{ type: 'string' }, { type: 'number' }], additionalItems: false, minItems: 2, maxItems: 2 };
  const check = compileSchema(tuple);
  assert.equal(check(['a', 1]), undefined);
  assert.equal(check(['a', 'b'])?.path, '/1');
  assert.equal(check(['a'])?.path, '');
  assert.deepEqual(tuple.items, [{ type: 'string' }, { type: 'number' }], 'the registrant’s schema is not changed');
});
