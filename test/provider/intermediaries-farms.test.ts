// The farm engine with a stand-in provider: leaves are answered by a small HTTP server
// playing the provider's /s/ path, so what is tested is the engine: apply and its
// idempotence, import bindings, message safety, crash rules (the script is not running:
// the graph went through JSON), restore from the registry.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createFarmEngine, validateFarmGraph, type FarmEngine } from '../../src/provider/intermediaries/farms.ts';
import { exportEndpoint, farm, onCrash, or, par, ref, role, update } from '../../src/compose/index.ts';
import { OrderEntry, OrderProcessing, Payment } from '../../examples/adventure-works/definitions.ts';

function buildGraph() {
  const g = farm('aw', () => {
    const p1 = role(Payment, { image: 'aw:1' })(undefined, { name: 'payment1' });
    const p2 = role(Payment, { image: 'aw:1' })(undefined, { name: 'payment2' });
    const [pr, r] = ref(p1.exports, { name: 'pref' });
    onCrash(p1.instance, update(r, p2.exports));
    const proc = role(OrderProcessing, { image: 'aw:1' })(undefined, { name: 'proc' });
    const e1 = role(OrderEntry, { image: 'aw:1' })({ payment: par(pr), processing: proc.exports }, { name: 'entry1' });
    const e2 = role(OrderEntry, { image: 'aw:1' })({ payment: par(pr), processing: proc.exports }, { name: 'entry2' });
    exportEndpoint(or(e1.exports, e2.exports), 'order-entry');
  });
  return JSON.parse(JSON.stringify(g)) as unknown; // as the provider receives it
}

interface Harness {
  engine: FarmEngine;
  providerUrl: string;
  farmUrl: string;
  hits: Map<string, number>;
  /** Messages the engine sent in process (the router's invoke), when the harness gave it one. */
  invoked: Map<string, number>;
  registered: string[];
  deployed: string[];
  events: Array<{ id: number; kind: string; detail: unknown }>;
  close(): Promise<void>;
}

async function harness(events: Harness['events'] = [], inProcess = false): Promise<Harness> {
  const hits = new Map<string, number>();
  const invoked = new Map<string, number>();
  // The stand-in provider: /s/<service>/<op> answers who it is.
  const fakeProvider: Server = createServer((req, res) => {
    const [, , service, op] = (req.url ?? '').split('/');
    hits.set(service!, (hits.get(service!) ?? 0) + 1);
    req.resume();
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ service, op, authorization: `by ${service}`, by: service })));
  });
  await new Promise<void>((r) => fakeProvider.listen(0, '127.0.0.1', r));
  const providerUrl = `http://127.0.0.1:${(fakeProvider.address() as AddressInfo).port}`;
  const registered: string[] = [];
  const deployed: string[] = [];
  const engine = createFarmEngine({
    registry: {
      async appendEvent(e) {
        events.push({ id: events.length + 1, kind: e.kind, detail: structuredClone(e.detail) });
      },
      async listEvents(f) {
        return events.filter((e) => f.kind === undefined || e.kind === f.kind);
      },
    },
    providerUrl: () => providerUrl,
    async registerService(d) {
      registered.push(d.name);
    },
    async deploy(s) {
      deployed.push(s);
    },
    ...(inProcess
      ? {
          async invoke(service: string, op: string) {
            invoked.set(service, (invoked.get(service) ?? 0) + 1);
            return { status: 200, body: JSON.stringify({ service, op, by: service, inProcess: true }), contentType: 'application/json' };
          },
        }
      : {}),
  });
  const front = createServer((req, res) => engine.handle(req, res));
  await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
  const farmUrl = `http://127.0.0.1:${(front.address() as AddressInfo).port}`;
  return {
    engine, providerUrl, farmUrl, hits, invoked, registered, deployed, events,
    async close() {
      engine.close();
      front.closeAllConnections();
      fakeProvider.closeAllConnections();
      await Promise.all([new Promise((r) => front.close(r)), new Promise((r) => fakeProvider.close(r))]);
    },
  };
}

const post = async (url: string, body: unknown) => {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as Record<string, any> };
};
const pay = { orderId: 'o1', card: '4111111111111111', amount: 10 };

test('apply registers one service per instance; applying the same graph again changes nothing', async (t) => {
  const h = await harness();
  t.after(() => h.close());
  const first = await h.engine.apply(buildGraph());
  assert.equal(first.changed, true);
  assert.deepEqual(h.registered.sort(), ['aw-entry1', 'aw-entry2', 'aw-payment1', 'aw-payment2', 'aw-proc']);
  assert.deepEqual(h.deployed.sort(), h.registered);
  const again = await h.engine.apply(buildGraph());
  assert.deepEqual([again.changed, again.changes], [false, []]);
  assert.equal(h.registered.length, 5, 'nothing registered again');
  assert.equal(h.events.filter((e) => e.kind === 'farm-applied').length, 1, 'nothing recorded again');
  assert.deepEqual(h.engine.importsFor('aw-entry1'), [
    { name: 'payment', url: `${h.providerUrl}/x/aw/entry1/payment` },
    { name: 'processing', url: `${h.providerUrl}/x/aw/entry1/processing` },
  ]);
  assert.equal(h.engine.importsFor('payment'), undefined);
});

test('messages cross the intermediaries; bad input is refused before any instance sees it', async (t) => {
  const h = await harness();
  t.after(() => h.close());
  await h.engine.apply(buildGraph());
  assert.ok(h.engine.handles('/s/order-entry/SubmitOrder'));
  assert.ok(!h.engine.handles('/s/payment/Authorize'));
  const order = { orderId: 'o1', customer: 'ann', items: [{ sku: 'bike', quantity: 1 }], card: '4111111111111111' };
  for (let i = 0; i < 10; i++) assert.equal((await post(`${h.farmUrl}/s/order-entry/SubmitOrder`, order)).status, 200);
  assert.deepEqual([h.hits.get('aw-entry1'), h.hits.get('aw-entry2')], [5, 5], 'or spread the orders');
  // What entry1's payment socket is bound to: par → ref → payment1.
  const viaImport = await post(`${h.farmUrl}/x/aw/entry1/payment/Authorize`, pay);
  assert.equal(viaImport.json.by, 'aw-payment1');
  const before = [...h.hits.values()].reduce((a, b) => a + b, 0);
  const bad = await post(`${h.farmUrl}/x/aw/entry1/payment/Authorize`, { orderId: 'o1', card: 42, amount: 1 });
  assert.equal(bad.status, 400);
  assert.match(bad.json.error.message, /payment\.Authorize input\/card/);
  assert.equal((await post(`${h.farmUrl}/s/order-entry/SubmitOrder`, { ...order, items: [] })).status, 400);
  assert.equal([...h.hits.values()].reduce((a, b) => a + b, 0), before, 'no instance saw a bad message');
  assert.equal((await post(`${h.farmUrl}/x/aw/pref/Nope`, {})).status, 404);
});

test('a crash rule rebinds the ref by itself (no script); other removals do not fire it', async (t) => {
  const h = await harness();
  t.after(() => h.close());
  await h.engine.apply(buildGraph());
  h.engine.onInstanceGone('aw-payment1', 'scaled-down');
  assert.equal((await post(`${h.farmUrl}/x/aw/pref/Authorize`, pay)).json.by, 'aw-payment1');
  h.engine.onInstanceGone('aw-payment1', 'crashed');
  assert.equal((await post(`${h.farmUrl}/x/aw/pref/Authorize`, pay)).json.by, 'aw-payment2');
  assert.equal((await post(`${h.farmUrl}/x/aw/entry2/payment/Authorize`, pay)).json.by, 'aw-payment2');
  const s = h.engine.get('aw')!;
  assert.deepEqual(s.refs, { pref: 'payment2' });
  assert.equal(s.crashes.length, 1);
  // Re-applying the unchanged script keeps the rebinding.
  await h.engine.apply(buildGraph());
  assert.deepEqual(h.engine.get('aw')!.refs, { pref: 'payment2' });
  await h.engine.settled();
  assert.ok(h.events.some((e) => e.kind === 'farm-crash-rule'));
});

test('a restarted provider restores farms from the registry; the farms API applies and lists', async (t) => {
  const events: Harness['events'] = [];
  const a = await harness(events);
  const res = await fetch(`${a.farmUrl}/api/v1/farms/aw`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(buildGraph()) });
  assert.equal(res.status, 200);
  assert.equal(((await res.json()) as { changed: boolean }).changed, true);
  const again = (await (await fetch(`${a.farmUrl}/api/v1/farms/aw`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(buildGraph()) })).json()) as { changed: boolean };
  assert.equal(again.changed, false);
  await a.close();
  const b = await harness(events);
  t.after(() => b.close());
  await b.engine.restore();
  assert.deepEqual(b.registered, [], 'restoring does not re-register');
  const list = (await (await fetch(`${b.farmUrl}/api/v1/farms`)).json()) as { farms: Array<{ name: string; exports: string[] }> };
  assert.deepEqual(list.farms, [{ name: 'aw', nodes: 9, exports: ['order-entry'] }]);
  assert.equal((await post(`${b.farmUrl}/s/order-entry/SubmitOrder`, { orderId: 'o', customer: 'c', items: [{ sku: 's', quantity: 1 }], card: '4111111111111111' })).status, 200);
});

test('the provider re-checks the graph: a miswired edge is refused even if a script cast past the types', () => {
  const g = buildGraph() as { nodes: Array<Record<string, unknown>> };
  const entry = g.nodes.find((n) => n.id === 'entry1')!;
  (entry.imports as Record<string, string>).payment = 'proc';
  assert.throws(() => validateFarmGraph(g), /nodes\/\d+\/imports\/payment: proc is order-processing, payment expected/);
});

test('with the router in process, messages reach the instances without an HTTP hop to the provider', async (t) => {
  const h = await harness([], true);
  t.after(() => h.close());
  await h.engine.apply(buildGraph());
  const order = { orderId: 'o1', customer: 'ann', items: [{ sku: 'bike', quantity: 1 }], card: '4111111111111111' };
  for (let i = 0; i < 4; i++) {
    const r = await post(`${h.farmUrl}/s/order-entry/SubmitOrder`, order);
    assert.equal(r.status, 200);
    assert.equal(r.json.inProcess, true);
  }
  assert.deepEqual([h.invoked.get('aw-entry1'), h.invoked.get('aw-entry2')], [2, 2], 'or spread the orders in process');
  const viaImport = await post(`${h.farmUrl}/x/aw/entry1/payment/Authorize`, pay);
  assert.equal(viaImport.json.by, 'aw-payment1', 'par → ref → payment1, in process');
  assert.equal([...h.hits.values()].reduce((a, b) => a + b, 0), 0, "nothing went to the provider's /s/ over HTTP");
  assert.equal((await post(`${h.farmUrl}/x/aw/entry1/payment/Authorize`, { orderId: 'o1', card: 42, amount: 1 })).status, 400);
});
