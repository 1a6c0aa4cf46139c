import { test } from 'node:test';
import assert from 'node:assert/strict';
import graph from '../../examples/adventure-works/farm.ts';
import { edgesOf, farm, or, role, toDot } from '../../src/compose/index.ts';
import { OrderProcessing, Payment } from '../../examples/adventure-works/definitions.ts';

test('the Adventure Works script builds a graph and calls nothing', () => {
  assert.equal(graph.name, 'adventure-works');
  const kinds = Object.fromEntries(graph.nodes.map((n) => [n.id, n.kind]));
  assert.deepEqual(kinds, {
    payment1: 'instance', payment2: 'instance', credit: 'import', 'payment-ref': 'ref',
    processing: 'instance', 'par-1': 'par', entry1: 'instance', entry2: 'instance', 'or-1': 'or',
  });
  const entry1 = graph.nodes.find((n) => n.id === 'entry1');
  assert.deepEqual(entry1, { kind: 'instance', id: 'entry1', service: 'order-entry', imports: { payment: 'par-1', processing: 'processing' } });
  assert.deepEqual(graph.nodes.find((n) => n.id === 'par-1'), { kind: 'par', id: 'par-1', service: 'payment', targets: ['payment-ref', 'credit'] });
  assert.deepEqual(graph.exports, [{ path: 'order-entry', node: 'or-1', service: 'order-entry' }]);
  assert.deepEqual(graph.crashRules, [{ instance: 'payment1', actions: [{ kind: 'update', ref: 'payment-ref', target: 'payment2' }] }]);
  assert.deepEqual(Object.keys(graph.services).sort(), ['order-entry', 'order-processing', 'payment']);
  assert.deepEqual(JSON.parse(JSON.stringify(graph)), graph, 'the graph is plain JSON');
  assert.ok(edgesOf(graph).some((e) => e.from === 'entry2' && e.to === 'par-1' && e.label === 'payment'));
  const dot = toDot(graph);
  assert.match(dot, /^digraph "adventure-works" \{/);
  assert.match(dot, /"or-1" -> "entry1"/);
});

test('combinators refuse to run outside farm() and casts past the types still fail clearly', () => {
  assert.throws(() => role(Payment, { image: 'x:1' })(), /inside farm/);
  assert.throws(
    () => farm('f', () => {
      const p = role(Payment, { image: 'x:1' })();
      const q = role(OrderProcessing, { image: 'x:1' })();
      or(p.exports, q.exports as never);
    }),
    /or: argument 2 is order-processing, argument 1 is payment/,
  );
  assert.throws(() => farm('f', () => { role(Payment, { image: 'x:1' })(undefined, { name: 'a' }); role(Payment, { image: 'x:1' })(undefined, { name: 'a' }); }), /used twice/);
});
