// defineService checks what it is given; toServiceDescription yields what the provider registers.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { defineService, isServiceDefinition, toServiceDescription, Type } from '../../src/service/index.ts';
import { validateServiceDescription } from '../../src/protocol/service.ts';
import { ShoalError } from '../../src/protocol/errors.ts';
import { Echo, echoDescription, EchoWithProbes } from '../../examples/echo/echo.ts';
import { Payment, Shop } from './fixtures/payment.ts';

const op = { input: Type.Object({}), output: Type.Object({}) };

describe('defineService', () => {
  test('returns a frozen definition that keeps the schemas', () => {
    assert.ok(isServiceDefinition(Payment));
    assert.ok(Object.isFrozen(Payment));
    assert.equal(Payment.operations.Authorize.input.properties.card.type, 'string');
    assert.deepEqual(Object.keys(Shop.imports), ['payment']);
    assert.equal(Shop.imports.payment, Payment);
    assert.ok(!isServiceDefinition({ name: 'x', version: '1', operations: {} }));
  });

  const cases: Array<[string, () => unknown, string]> = [
    ['a bad name', () => defineService({ name: 'Bad_Name', version: '1', operations: { A: op } }), 'name'],
    ['a bad version', () => defineService({ name: 'ok', version: ' 1', operations: { A: op } }), 'version'],
    ['no operations', () => defineService({ name: 'ok', version: '1', operations: {} }), 'operations'],
    ['a bad operation name', () => defineService({ name: 'ok', version: '1', operations: { 'a/b': op } }), 'operations.a/b'],
    ['a schema that is not an object', () => defineService({ name: 'ok', version: '1', operations: { A: { input: 'string' as never, output: Type.Object({}) } } }), 'operations.A.input'],
    ['an import that is not a definition', () => defineService({ name: 'ok', version: '1', operations: { A: op }, imports: { p: { name: 'p' } as never } }), 'imports.p'],
    ['an import name that cannot be a socket', () => defineService({ name: 'ok', version: '1', operations: { A: op }, imports: { Pay: Payment } }), 'imports.Pay'],
  ];
  for (const [what, make, field] of cases) {
    test(`refuses ${what}, naming ${field}`, () => {
      assert.throws(make, (e: unknown) => e instanceof ShoalError && e.code === 'invalid' && e.field === field && e.message.includes(field));
    });
  }
});

describe('toServiceDescription', () => {
  test('is plain JSON the provider accepts: no TypeBox markers, imports as { service, version }', () => {
    const d = toServiceDescription(Shop);
    assert.deepEqual(JSON.parse(JSON.stringify(d)), d, 'plain JSON');
    assert.deepEqual(Object.getOwnPropertySymbols(d.operations.Buy!.input), []);
    assert.deepEqual(d.imports, { payment: { service: 'payment', version: '2' } });
    assert.equal(d.operations.Buy!.idempotent, false);
    const valid = validateServiceDescription(d);
    assert.equal(valid.name, 'shop');
    assert.equal(valid.image, 'shop:1');
    assert.deepEqual(valid.operations.Buy!.input.required, ['item', 'quantity', 'card', 'amount']);
    assert.equal(validateServiceDescription(toServiceDescription(Payment)).operations.Refund!.idempotent, true);
  });

  test('needs an image, from the definition or given', () => {
    const noImage = defineService({ name: 'noimg', version: '1', operations: { A: op } });
    assert.throws(() => toServiceDescription(noImage), (e: unknown) => e instanceof ShoalError && e.field === 'image');
    assert.equal(toServiceDescription(noImage, { image: 'x:1' }).image, 'x:1');
  });

  test('echo: the registered description has Echo and Inspect; the instance serves the probes too', () => {
    assert.deepEqual(Object.keys(echoDescription.operations), ['Echo', 'Inspect']);
    assert.deepEqual(Object.keys(EchoWithProbes.operations), ['Echo', 'Inspect', 'Crash', 'Hog', 'Spawn', 'Connect']);
    assert.equal(EchoWithProbes.name, Echo.name);
    const valid = validateServiceDescription(echoDescription);
    assert.equal(valid.image, 'echo:1');
    assert.deepEqual(valid.resources, { memoryMb: 128, cpuMillis: 500, pids: 64 });
    assert.equal(valid.operations.Echo!.idempotent, true);
  });
});
