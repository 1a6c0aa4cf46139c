import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Type } from '@sinclair/typebox';
import { validateServiceDescription } from '../../src/protocol/service.ts';
import { ShoalError } from '../../src/protocol/errors.ts';

const base = {
  name: 'echo',
  version: '1.0.0',
  image: 'echo:1',
  operations: { Echo: { input: { type: 'object' }, output: { type: 'object' } } },
};

function fieldOf(value: unknown): string | undefined {
  try {
    validateServiceDescription(value);
  } catch (e) {
    assert.ok(e instanceof ShoalError, `expected a ShoalError, got ${String(e)}`);
    assert.equal(e.code, 'invalid');
    assert.ok(e.message.includes(e.field ?? '(root)'), `message names the field: ${e.message}`);
    return e.field;
  }
  assert.fail('expected validation to fail');
}

test('applies every default and leaves the input untouched', () => {
  const input = structuredClone(base);
  const d = validateServiceDescription(input);
  assert.deepEqual(d.resources, { memoryMb: 128, cpuMillis: 500, pids: 64 });
  assert.deepEqual(d.scaling, { min: 0, max: 4, targetConcurrency: 10, idleTimeoutMs: 300_000, idle: 'stop', keepStateMs: 86_400_000 });
  assert.deepEqual(d.placement, {});
  assert.deepEqual(d.imports, {});
  assert.equal(d.operations.Echo?.idempotent, false);
  assert.deepEqual(input, base, 'input not mutated');
});

test('keeps given values and fills only the missing ones', () => {
  const d = validateServiceDescription({
    ...base,
    resources: { memoryMb: 256 },
    scaling: { min: 1, max: 8 },
    operations: { Echo: { input: { type: 'object' }, output: { type: 'object' }, idempotent: true } },
    imports: { db: { service: 'store', version: '2' } },
    placement: { policy: 'host-list', hosts: ['h1'], labels: { zone: 'a' }, requires: { isolation: 'namespaces', canPause: true } },
    driver: 'runc',
  });
  assert.deepEqual(d.resources, { memoryMb: 256, cpuMillis: 500, pids: 64 });
  assert.deepEqual(d.scaling, { min: 1, max: 8, targetConcurrency: 10, idleTimeoutMs: 300_000, idle: 'stop', keepStateMs: 86_400_000 });
  assert.equal(d.operations.Echo?.idempotent, true);
  assert.equal(d.placement.requires?.isolation, 'namespaces');
  assert.equal(d.driver, 'runc');
});

test('a TypeBox-written description is accepted as its JSON Schema', () => {
  const d = validateServiceDescription({
    ...base,
    operations: {
      Echo: {
        input: Type.Object({ message: Type.String(), n: Type.Optional(Type.Integer()) }),
        output: Type.Union([Type.Object({ message: Type.String() }), Type.Null()]),
      },
    },
  });
  const input = d.operations.Echo?.input as { properties: Record<string, unknown>; required: string[] };
  assert.deepEqual(input.required, ['message']);
  assert.equal(Object.getOwnPropertySymbols(input).length, 0, 'TypeBox symbols dropped');
});

test('errors name the first offending field as a JSON pointer', () => {
  const op = (input: unknown, output: unknown = { type: 'object' }) => ({ ...base, operations: { Echo: { input, output } } });
  const cases: Array<[string, unknown, string]> = [
    ['not an object', 'echo', ''],
    ['name missing', { ...base, name: undefined }, '/name'],
    ['name upper case', { ...base, name: 'Echo' }, '/name'],
    ['name too long', { ...base, name: 'a'.repeat(64) }, '/name'],
    ['version missing', { ...base, version: undefined }, '/version'],
    ['no operations', { ...base, operations: {} }, '/operations'],
    ['bad operation name', { ...base, operations: { 'bad-op': base.operations.Echo } }, '/operations/bad-op'],
    ['input not a schema', op('x'), '/operations/Echo/input'],
    ['input declares nothing', op({}), '/operations/Echo/input'],
    ['output unknown type', op({ type: 'object' }, { type: 'strng' }), '/operations/Echo/output/type'],
    ['nested bad type', op({ type: 'object', properties: { a: { type: 'text' } } }), '/operations/Echo/input/properties/a/type'],
    ['anyOf not a list', op({ anyOf: { type: 'string' } }), '/operations/Echo/input/anyOf'],
    ['required not names', op({ type: 'object', required: [1] }), '/operations/Echo/input/required'],
    ['idempotent not boolean', { ...base, operations: { Echo: { ...base.operations.Echo, idempotent: 'yes' } } }, '/operations/Echo/idempotent'],
    ['bad image', { ...base, image: 'UPPER:1' }, '/image'],
    ['memory too small', { ...base, resources: { memoryMb: 1 } }, '/resources/memoryMb'],
    ['typo in scaling', { ...base, scaling: { mni: 1 } }, '/scaling/mni'],
    ['max below min', { ...base, scaling: { min: 5, max: 2 } }, '/scaling/max'],
    ['max zero', { ...base, scaling: { max: 0 } }, '/scaling/max'],
    ['target zero', { ...base, scaling: { targetConcurrency: 0 } }, '/scaling/targetConcurrency'],
    ['unknown policy', { ...base, placement: { policy: 'random' } }, '/placement/policy'],
    ['host-list without hosts', { ...base, placement: { policy: 'host-list' } }, '/placement/hosts'],
    ['unknown isolation', { ...base, placement: { requires: { isolation: 'chroot' } } }, '/placement/requires/isolation'],
    ['import bad service', { ...base, imports: { db: { service: 'Bad' } } }, '/imports/db/service'],
    ['malformed driver name', { ...base, driver: 'Docker!' }, '/driver'],
    ['unknown top-level field', { ...base, replicas: 3 }, '/replicas'],
  ];
  for (const [label, value, field] of cases) {
    assert.equal(fieldOf(value), field, label);
  }
});
