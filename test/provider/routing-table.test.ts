// The routing table's removal events: what crash rules (and anything else) hear about an
// instance that left the routing set.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createInFlightTracker } from '../../src/provider/balancer/index.ts';
import { createRoutingTable, type RemovalReason, type RouteEndpoint } from '../../src/provider/routing-table.ts';

function setup() {
  const heard: Array<[string, RemovalReason]> = [];
  const table = createRoutingTable({
    tracker: createInFlightTracker(),
    events: { onRemoved: (ep, reason) => heard.push([ep.id, reason]) },
  });
  const endpoint = (id: string) => ({ id, service: 'payment', version: '1', deploymentId: `d-${id}`, hostId: 'h1' }) as unknown as RouteEndpoint;
  return { table, heard, endpoint, close: () => {} };
}

test('an instance taken out on the router guess is reported again when its host says it crashed', () => {
  const { table, heard, endpoint, close } = setup();
  table.add(endpoint('p1'));
  assert.equal(table.remove('p1', 'gone')?.id, 'p1');
  assert.equal(table.endpoints('payment').length, 0);
  // The host's crash event comes after the router found the socket refused.
  assert.equal(table.remove('p1', 'crashed'), undefined);
  assert.deepEqual(heard, [['p1', 'gone'], ['p1', 'crashed']]);
  // Once only: a repeated verdict, or a later removal, is not heard again.
  table.remove('p1', 'crashed');
  table.remove('p1', 'removed');
  assert.deepEqual(heard, [['p1', 'gone'], ['p1', 'crashed']]);
  close();
});

test('a removal for a reason the host gave first is heard once', () => {
  const { table, heard, endpoint, close } = setup();
  table.add(endpoint('p2'));
  table.remove('p2', 'crashed');
  table.remove('p2', 'gone');
  table.remove('p2', 'crashed');
  assert.deepEqual(heard, [['p2', 'crashed']]);
  assert.equal(table.remove('never-added', 'crashed'), undefined);
  assert.deepEqual(heard, [['p2', 'crashed']]);
  close();
});

test('a new endpoint is announced once (the wiring releases the waiting messages on it); a token refresh is not', () => {
  const added: string[] = [];
  const routable: boolean[] = [];
  const table = createRoutingTable({
    tracker: createInFlightTracker(),
    events: {
      onAdded: (ep) => {
        added.push(`${ep.service}/${ep.id}`);
        routable.push(table.endpoints(ep.service).includes(ep)); // a released message must find it
      },
    },
  });
  const endpoint = (id: string, token: string) => ({ id, service: 'payment', version: '1', deploymentId: `d-${id}`, hostId: 'h1', token, expiresAt: 1 }) as unknown as RouteEndpoint;
  table.add(endpoint('p1', 't1'));
  assert.deepEqual(added, ['payment/p1']);
  table.add(endpoint('p1', 't2'));
  assert.deepEqual(added, ['payment/p1']);
  assert.equal(table.endpoint('p1')?.token, 't2');
  table.add(endpoint('p2', 't1'));
  assert.deepEqual(added, ['payment/p1', 'payment/p2']);
  assert.deepEqual(routable, [true, true], 'routable by the time it is announced');
});

test('a paused endpoint leaves routing without a removal event, keeps its token fresh, and comes back announced', () => {
  const added: string[] = [];
  const heard: Array<[string, RemovalReason]> = [];
  const table = createRoutingTable({
    tracker: createInFlightTracker(),
    events: { onAdded: (ep) => added.push(ep.id), onRemoved: (ep, reason) => heard.push([ep.id, reason]) },
  });
  const endpoint = (id: string, token: string) => ({ id, service: 'payment', version: '1', deploymentId: `d-${id}`, hostId: 'h1', token, expiresAt: 1 }) as unknown as RouteEndpoint;
  table.add(endpoint('p1', 't1'));
  table.add(endpoint('p2', 't1'));
  assert.equal(table.pause('p1')?.id, 'p1');
  assert.equal(table.pause('p1'), undefined, 'already paused');
  assert.deepEqual(table.endpoints('payment').map((e) => e.id), ['p2'], 'no message is routed to a frozen instance');
  assert.equal(table.endpoint('p1'), undefined);
  assert.deepEqual(table.paused('payment').map((e) => e.id), ['p1']);
  assert.deepEqual(heard, [], 'pausing is not a removal: no crash rule runs');
  table.add(endpoint('p1', 't2'));
  assert.equal(table.endpoints('payment').length, 1, 'a sync re-reading a paused instance does not route to it');
  assert.equal(table.pausedEndpoint('p1')?.token, 't2', '…but its token stays fresh');
  assert.equal(table.unpause('p1')?.id, 'p1');
  assert.deepEqual(added, ['p1', 'p2', 'p1'], 'coming back is announced, so queued messages go to it');
  assert.deepEqual(table.endpoints('payment').map((e) => e.id).sort(), ['p1', 'p2']);
  table.pause('p2');
  assert.equal(table.remove('p2', 'host-dead'), undefined);
  assert.deepEqual(heard, [['p2', 'host-dead']], 'a paused instance that is lost is heard once');
  assert.deepEqual(table.paused('payment'), []);
  table.pause('p1');
  table.putService({ name: 'payment', version: '1', operations: {} } as never);
  assert.deepEqual(table.removeService('payment').map((e) => e.id), ['p1'], 'removing the service takes its paused endpoints too');
});
