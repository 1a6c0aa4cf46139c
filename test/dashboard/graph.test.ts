// The farm picture's model and layout (src/dashboard/web/graph.js, the page's own code run
// here in Node): the Adventure Works farm gives every node and export, the par/or
// intermediaries and the crash rule; a ref's edge follows the provider's current binding,
// so a rebinding (payment1 crashed) moves it; dagre places every node without overlap.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import awFarm from '../../examples/adventure-works/farm.ts';
import type { FarmGraph } from '../../src/protocol/index.ts';

interface Model {
  nodes: Array<{ id: string; kind: string }>;
  edges: Array<{ from: string; to: string; kind: string; label: string }>;
}
interface Laid {
  width: number;
  height: number;
  nodes: Array<{ id: string; x: number; y: number; width: number; height: number }>;
  edges: Array<{ points?: Array<{ x: number; y: number }> }>;
}
// Browser code without type declarations: loaded by a path tsc does not follow.
const GRAPH = '../../src/dashboard/web/graph.js';
const web = (await import(GRAPH)) as { graphModel(status: unknown): Model; layout(model: Model): Laid };
const graph = awFarm as FarmGraph;
const status = (refs: Record<string, string>) => ({ name: graph.name, graph, refs, crashes: [] });

test('the Adventure Works model: every node, the intermediaries, exports, and the crash rule', () => {
  const model = web.graphModel(status({ 'payment-ref': 'payment1' }));
  const ids = model.nodes.map((n) => n.id);
  for (const id of ['payment1', 'payment2', 'credit', 'payment-ref', 'processing', 'entry1', 'entry2', 'export:order-entry']) assert.ok(ids.includes(id), `${id} in ${ids.join(', ')}`);
  assert.equal(model.nodes.filter((n) => n.kind === 'or').length, 1);
  assert.equal(model.nodes.filter((n) => n.kind === 'par').length, 1);
  assert.deepEqual(
    model.edges.filter((e) => e.kind === 'crash').map((e) => [e.from, e.to, e.label]),
    [['payment-ref', 'payment2', 'if payment1 crashes']],
  );
  for (const e of model.edges) assert.ok(ids.includes(e.from) && ids.includes(e.to), `edge ${e.from} → ${e.to} between known nodes`);
});

test("a ref's edge follows its current binding", () => {
  const boundTo = (refs: Record<string, string>) => web.graphModel(status(refs)).edges.filter((e) => e.kind === 'ref').map((e) => e.to);
  assert.deepEqual(boundTo({ 'payment-ref': 'payment1' }), ['payment1']);
  assert.deepEqual(boundTo({ 'payment-ref': 'payment2' }), ['payment2'], 'rebound after payment1 crashed');
});

test('dagre places every node, apart, and routes every edge', () => {
  const laid = web.layout(web.graphModel(status({ 'payment-ref': 'payment1' })));
  assert.ok(laid.width > 0 && laid.height > 0);
  for (const n of laid.nodes) assert.ok(Number.isFinite(n.x) && Number.isFinite(n.y), n.id);
  for (const [i, a] of laid.nodes.entries()) {
    for (const b of laid.nodes.slice(i + 1)) {
      const apart = Math.abs(a.x - b.x) >= (a.width + b.width) / 2 || Math.abs(a.y - b.y) >= (a.height + b.height) / 2;
      assert.ok(apart, `${a.id} overlaps ${b.id}`);
    }
  }
  for (const e of laid.edges) assert.ok((e.points?.length ?? 0) >= 2);
});
