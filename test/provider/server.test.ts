// The provider's control API: services (validation naming the field, versions, removal
// undeploying), hosts (join token, the host's own token checked), deployments with
// timelines, instances, OpenAPI, metrics.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { adminAuth, startFarm, until } from './fixtures/provider.ts';
import { ECHO_TEST_SERVICE, startFakeHost } from './fixtures/fake-host.ts';

async function api(base: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...adminAuth(base), ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as any) : undefined, headers: res.headers };
}

test('services: registration is validated and errors name the field', async (t) => {
  const { provider } = await startFarm(t, { hosts: 1, register: false });
  const bad = [
    [{ ...ECHO_TEST_SERVICE, name: 'Not_OK' }, '/name'],
    [{ ...ECHO_TEST_SERVICE, operations: {} }, '/operations'],
    [{ ...ECHO_TEST_SERVICE, operations: { Echo: { input: { type: 'thing' }, output: { type: 'object' } } } }, '/operations/Echo/input/type'],
    [{ ...ECHO_TEST_SERVICE, operations: { Echo: { input: { type: 'string', pattern: '(' }, output: { type: 'object' } } } }, '/operations/Echo/input'],
    [{ ...ECHO_TEST_SERVICE, scaling: { min: 3, max: 2 } }, '/scaling/max'],
    [{ ...ECHO_TEST_SERVICE, image: 'UPPER:case' }, '/image'],
  ] as const;
  for (const [description, field] of bad) {
    const r = await api(provider.url, 'POST', '/api/v1/services', description);
    assert.equal(r.status, 400, JSON.stringify(r.body));
    assert.equal(r.body.error.code, 'invalid');
    assert.equal(r.body.error.field, field, r.body.error.message);
  }
  const notJson = await fetch(`${provider.url}/api/v1/services`, { method: 'POST', headers: { 'content-type': 'application/json', ...adminAuth(provider.url) }, body: '{' });
  assert.equal(notJson.status, 400);
  assert.equal(((await notJson.json()) as any).error.field, 'body');

  const created = await api(provider.url, 'POST', '/api/v1/services', ECHO_TEST_SERVICE);
  assert.equal(created.status, 201);
  assert.equal(created.body.service.description.scaling.max, 4, 'defaults applied');
  assert.equal((await api(provider.url, 'POST', '/api/v1/services', ECHO_TEST_SERVICE)).status, 200, 'the same version again');
  const list = await api(provider.url, 'GET', '/api/v1/services');
  assert.deepEqual(list.body.services.map((s: any) => [s.name, s.version, s.ready]), [['echo', '1', 0]]);
  const show = await api(provider.url, 'GET', '/api/v1/services/echo');
  assert.equal(show.body.service.name, 'echo');
  assert.deepEqual(show.body.versions.map((v: any) => v.version), ['1']);
  assert.equal((await api(provider.url, 'GET', '/api/v1/services/nope')).status, 404);
  assert.equal((await api(provider.url, 'DELETE', '/api/v1/services/nope')).status, 404);
});

test('services: removing one undeploys its instances; a new version replaces the old one', async (t) => {
  const farm = await startFarm(t, { hosts: 1 });
  const { provider, hosts } = farm;
  assert.equal((await farm.call('Echo', { message: 'a' })).status, 200);
  assert.equal(hosts[0]!.instances.size, 1);

  const v2 = await api(provider.url, 'POST', '/api/v1/services', { ...ECHO_TEST_SERVICE, version: '2' });
  assert.equal(v2.status, 201);
  await until('v1 instance undeployed', () => hosts[0]!.instances.size === 0);
  assert.equal((await farm.call('Echo', { message: 'b' })).status, 200);
  assert.deepEqual([...hosts[0]!.instances.values()].map((i) => i.service.version), ['2']);
  assert.deepEqual(hosts[0]!.plans.map((p) => p.service.version), ['1', '2']);

  const rm = await api(provider.url, 'DELETE', '/api/v1/services/echo');
  assert.equal(rm.status, 200);
  assert.equal(rm.body.stopped, 1);
  assert.equal(hosts[0]!.instances.size, 0);
  assert.equal((await farm.call('Echo', { message: 'c' })).status, 404);
  const records = await provider.registry.listDeployments({ service: 'echo' });
  assert.ok(records.every((r) => r.state === 'stopped'), JSON.stringify(records.map((r) => r.state)));
});

test('hosts: registration needs the join token and a host token the host accepts; the token is never shown', async (t) => {
  const farm = await startFarm(t, { hosts: 0, register: false });
  const host = await startFakeHost({ token: 'the-host-token' });
  t.after(() => host.close());
  const body = { controlUrl: host.controlUrl, token: 'the-host-token', labels: { zone: 'a' } };
  assert.equal((await api(farm.provider.url, 'POST', '/api/v1/hosts', body)).status, 401);
  assert.equal((await api(farm.provider.url, 'POST', '/api/v1/hosts', body, { authorization: 'Bearer wrong-token-x' })).status, 401);
  const auth = { authorization: 'Bearer join-token-for-tests' };
  const wrongHostToken = await api(farm.provider.url, 'POST', '/api/v1/hosts', { ...body, token: 'not-the-host-token' }, auth);
  assert.equal(wrongHostToken.status, 403);
  assert.equal(wrongHostToken.body.error.field, 'token');
  const unreachable = await api(farm.provider.url, 'POST', '/api/v1/hosts', { ...body, controlUrl: 'http://127.0.0.1:9' }, auth);
  assert.equal(unreachable.status, 503);
  const invalid = await api(farm.provider.url, 'POST', '/api/v1/hosts', { ...body, token: 'short' }, auth);
  assert.equal(invalid.status, 400);
  assert.equal(invalid.body.error.field, 'token');
  const ok = await api(farm.provider.url, 'POST', '/api/v1/hosts', body, auth);
  assert.equal(ok.status, 201, JSON.stringify(ok.body));
  assert.equal(ok.body.id, host.id);
  assert.deepEqual(ok.body.labels, { zone: 'a' });
  const list = await api(farm.provider.url, 'GET', '/api/v1/hosts');
  assert.equal(list.body.hosts.length, 1);
  assert.equal(list.body.hosts[0].state, 'alive');
  assert.equal(list.body.hosts[0].report.hostId, host.id);
  assert.ok(!JSON.stringify(list.body).includes('the-host-token'), 'the host token stays inside the provider');
});

test('deployments, instances, events, OpenAPI, metrics, healthz', async (t) => {
  const farm = await startFarm(t, { hosts: 2 });
  const { provider } = farm;
  assert.equal((await farm.call('Echo', { message: 'a' })).status, 200);
  const more = await api(provider.url, 'POST', '/api/v1/services/echo/deployments', { count: 1 });
  assert.equal(more.status, 201, JSON.stringify(more.body));
  assert.equal(more.body.deployments.length, 1);
  assert.equal(provider.table.endpoints('echo').length, 2);

  await until('first reply in the timeline', async () => (await api(provider.url, 'GET', '/api/v1/deployments?service=echo')).body.deployments[0].timeline.phases.some((p: any) => p.name === 'first-reply'));
  const deps = await api(provider.url, 'GET', '/api/v1/deployments?service=echo');
  assert.equal(deps.body.deployments.length, 2);
  const first = deps.body.deployments[0];
  assert.equal(first.state, 'ready');
  assert.equal(first.endpoint.token, undefined, 'route tokens are not shown');
  assert.deepEqual(first.timeline.phases.map((p: any) => p.name), ['queue', 'place', 'admit', 'start', 'ready', 'first-reply']);
  assert.equal((await api(provider.url, 'GET', '/api/v1/deployments?service=nope')).status, 404);
  assert.equal((await api(provider.url, 'GET', '/api/v1/deployments?state=weird')).status, 400);

  const ps = await api(provider.url, 'GET', '/api/v1/instances');
  assert.equal(ps.body.instances.length, 2);
  assert.ok(ps.body.instances.every((i: any) => i.routable && i.service === 'echo' && i.deploymentId));
  // The fake host's driver declares no live operation.
  assert.ok(ps.body.instances.every((i: any) => Array.isArray(i.liveOps) && i.liveOps.length === 0));

  const events = await api(provider.url, 'GET', '/api/v1/events?service=echo');
  assert.ok(events.body.events.some((e: any) => e.kind === 'deployed'));

  const doc = await api(provider.url, 'GET', '/openapi.json');
  assert.equal(doc.body.openapi, '3.1.0');
  for (const p of ['/s/{service}/{operation}', '/api/v1/services', '/api/v1/hosts', '/api/v1/deployments', '/api/v1/instances']) assert.ok(doc.body.paths[p], p);

  const metrics = await (await fetch(`${provider.url}/metrics`, { headers: adminAuth(provider.url) })).text();
  assert.match(metrics, /shoal_provider_messages_total\{service="echo",operation="Echo",status="200"\} 1/);
  assert.match(metrics, /shoal_provider_cold_starts_total\{service="echo"\} 1/);
  assert.match(metrics, /shoal_provider_endpoints\{service="echo"\} 2/);
  assert.match(metrics, /shoal_provider_hosts\{state="alive"\} 2/);
  assert.match(metrics, /shoal_provider_deploy_duration_seconds_count\{service="echo",outcome="ready"\} 2/);
  assert.match(metrics, /shoal_provider_queue_depth/);

  assert.deepEqual((await api(provider.url, 'GET', '/healthz')).body, { ok: true, provider: provider.providerId });
  assert.equal((await api(provider.url, 'GET', '/api/v1/nothing')).status, 404);
});

test('removing a service answers the messages waiting for it at once', async (t) => {
  const farm = await startFarm(t, { hosts: 1 });
  farm.hosts[0]!.deployMs = 3000;
  const started = Date.now();
  const waiting = farm.call('Echo', { message: 'w' });
  await until('queued', async () => (await api(farm.provider.url, 'GET', '/api/v1/services/echo')).body.queued === 1);
  assert.equal((await api(farm.provider.url, 'DELETE', '/api/v1/services/echo')).status, 200);
  const r = await waiting;
  assert.equal(r.status, 503);
  assert.match(r.body.error.message, /was removed/);
  assert.ok(Date.now() - started < 2900, 'answered before the deployment would have finished');
  // The deployment under way finishes, finds the service gone, and removes what it made.
  await until('its instance removed', () => farm.hosts[0]!.removed.length === 1, 8000);
  assert.equal(farm.hosts[0]!.instances.size, 0);
  // The registry records the stop right after the instance is gone (not in the same tick).
  await until('the deployment recorded as stopped', async () => {
    const records = await farm.provider.registry.listDeployments({ service: 'echo' });
    return records.length === 1 && records[0]!.state === 'stopped';
  }, 5000);
  assert.equal(farm.hosts[0]!.plans.length, 1);
});
