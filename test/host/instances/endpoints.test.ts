import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createEndpoints } from '../../../src/host/instances/endpoints.ts';
import { verifyRouteToken } from '../../../src/host/data-plane/route-token.ts';
import { newRecord } from '../../../src/host/instances/instance-store.ts';
import { plan } from '../fixtures/fakes.ts';

const key = new Uint8Array(32).fill(9);

test('an endpoint carries a token signed with the first key, naming the instance, valid for the ttl', () => {
  const e = createEndpoints({ routeKeys: [key, new Uint8Array(32).fill(1)], dataUrl: () => 'http://10.0.0.1:7000', tokenTtlMs: 60_000, now: () => 1_000_000 });
  const ref = e.endpointFor(newRecord('echo-1', plan(), 'runc', 1));
  assert.equal(ref.url, 'http://10.0.0.1:7000/i');
  assert.deepEqual(ref.host, { dataUrl: 'http://10.0.0.1:7000' });
  assert.equal(ref.expiresAt, 1_060_000);
  const check = verifyRouteToken(ref.token, key, 1_000_000);
  assert.deepEqual(check, { ok: true, claims: { instance: 'echo-1', service: 'echo', expiresAt: 1_060_000, operations: [] } });
  assert.equal(verifyRouteToken(ref.token, key, 1_060_001).ok, false);
});

test("a plan's operations scope the token; the default lifetime is minutes, not hours", () => {
  const e = createEndpoints({ routeKeys: [key], dataUrl: () => 'http://h:1', now: () => 1_000_000 });
  const ref = e.endpointFor(newRecord('echo-1', { ...plan(), operations: ['Echo', 'Who'] }, 'runc', 1));
  assert.equal(ref.expiresAt, 1_000_000 + 10 * 60_000);
  const check = verifyRouteToken(ref.token, key, 1_000_000);
  assert.ok(check.ok);
  assert.deepEqual(check.claims.operations, ['Echo', 'Who']);
});

test('a description has an endpoint only while ready or paused, and its exit and timeline when set', () => {
  const e = createEndpoints({ routeKeys: [key], dataUrl: () => 'http://h:1' });
  const r = newRecord('echo-1', plan(), 'runc', 7);
  assert.equal(e.describe(r).endpoint, undefined);
  assert.equal(e.describe(r).manifestDigest, '');
  r.state = 'ready';
  assert.equal(e.describe(r).endpoint?.instance, 'echo-1');
  r.state = 'paused';
  assert.ok(e.describe(r).endpoint);
  r.state = 'crashed';
  r.exit = { reason: 'crashed', code: 3, at: 9 };
  const d = e.describe(r);
  assert.equal(d.endpoint, undefined);
  assert.deepEqual(d.exit, { reason: 'crashed', code: 3, at: 9 });
  assert.deepEqual([d.id, d.createdAt, d.driver, d.image], ['echo-1', 7, 'runc', 'echo:1']);
});
