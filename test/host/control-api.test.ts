import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createControlApi, fieldName, validatePlan } from '../../src/host/control-api.ts';
import type { Agent } from '../../src/host/agent.ts';
import { createEventBus } from '../../src/host/events.ts';
import { createHostMetrics } from '../../src/host/metrics.ts';
import type { DeploymentPlan, HostReport } from '../../src/protocol/deployment.ts';
import { ShoalError } from '../../src/protocol/errors.ts';

const TOKEN = 'test-token-123456';
const auth = { authorization: `Bearer ${TOKEN}` };
const good: DeploymentPlan = {
  service: { name: 'echo', version: '1.0.0' },
  image: 'echo@sha256:' + 'a'.repeat(64),
  store: 'http://127.0.0.1:5000',
  resources: { memoryMb: 64, cpuMillis: 250, pids: 64 },
  env: { GREETING: 'hi' },
  imports: [{ name: 'payment', url: 'http://127.0.0.1:1/i', token: 't' }],
  readiness: { path: '/healthz', timeoutMs: 5000 },
};

function fakeAgent() {
  const deployed: DeploymentPlan[] = [];
  const agent = {
    async deploy(plan: DeploymentPlan) {
      deployed.push(plan);
      if (plan.service.name === 'full') throw new ShoalError('conflict', 'refused: instance limit reached');
      return { endpoint: { instance: 'echo-1' }, timeline: { totalMs: 1 }, instance: { id: 'echo-1' } };
    },
    list: () => [],
    async get(id: string) {
      throw new ShoalError('not-found', `no instance ${id}`);
    },
    async remove() {},
    async logs(_id: string, tail: number) {
      return `last ${tail}\n`;
    },
  } as unknown as Agent;
  return { agent, deployed };
}

/** Metrics over an empty host: the API tests need the object, not its figures. */
function emptyHostMetrics() {
  return createHostMetrics(() => ({
    instances: 0,
    reservedMemoryMb: 0,
    reservedCpuMillis: 0,
    capacityMemoryMb: 1,
    capacityCpuMillis: 1,
    capacityInstances: 1,
    layerCacheBytes: 0,
    layerCacheEntries: 0,
    inFlight: 0,
  }));
}

function setup() {
  const { agent, deployed } = fakeAgent();
  const events = createEventBus();
  const metrics = emptyHostMetrics();
  const app = createControlApi({ agent, token: TOKEN, events, metrics, report: async () => ({ hostId: 'h' }) as HostReport, keepAliveMs: 50 });
  const post = (body: unknown, headers: Record<string, string> = auth) =>
    app.request('/v1/instances', { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  return { app, deployed, events, post };
}

test('a missing or wrong token gets 401 and nothing runs', async () => {
  const { app, deployed, post } = setup();
  for (const headers of [{}, { authorization: 'Bearer nope-nope-nope' }, { authorization: TOKEN }] as Array<Record<string, string>>) {
    const res = await post(good, headers);
    assert.equal(res.status, 401);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'unauthorized');
  }
  assert.equal(deployed.length, 0);
  for (const path of ['/v1/instances', '/v1/report', '/v1/events', '/metrics', '/v1/instances/x/logs']) {
    assert.equal((await app.request(path)).status, 401, path);
  }
  assert.equal((await app.request('/healthz')).status, 200);
  assert.equal((await app.request('/openapi.json')).status, 200);
});

test('malformed plans get 400 naming the field, and reach no agent', async () => {
  const { deployed, post } = setup();
  const cases: Array<[unknown, string]> = [
    ['{not json', 'body'],
    [[1], 'body'],
    [{ ...good, service: undefined }, 'service'],
    [{ ...good, service: { name: 'Bad Name', version: '1' } }, 'service.name'],
    [{ ...good, resources: { memoryMb: 'lots', cpuMillis: 1, pids: 1 } }, 'resources.memoryMb'],
    [{ ...good, resources: { memoryMb: 64, cpuMillis: 250 } }, 'resources.pids'],
    [{ ...good, driver: 'docker' }, 'driver'],
    [{ ...good, image: 'UPPER:case' }, 'image'],
    [{ ...good, store: 'ftp://x' }, 'store'],
    [{ ...good, surprise: 1 }, 'surprise'],
    [{ ...good, env: { 'bad-name': 'x' } }, 'env.bad-name'],
    [{ ...good, env: { SHOAL_LISTEN: '/x' } }, 'env.SHOAL_LISTEN'],
    [{ ...good, imports: [{ name: 'a', url: 'http://x' }, { name: 'a', url: 'http://y' }] }, 'imports[1].name'],
    [{ ...good, imports: [{ name: 'a', url: 42 }] }, 'imports[0].url'],
    [{ ...good, readiness: { timeoutMs: 1 } }, 'readiness.timeoutMs'],
  ];
  for (const [body, field] of cases) {
    const res = await post(body);
    const json = (await res.json()) as { error: { code: string; field: string; message: string } };
    assert.equal(res.status, 400, `${field}: ${JSON.stringify(json)}`);
    assert.equal(json.error.field, field);
    assert.match(json.error.message, new RegExp(field.replace(/[[\].]/g, '\\$&')));
  }
  assert.equal(deployed.length, 0);
  const wrongType = await post(good, { ...auth, 'content-type': 'text/plain' });
  assert.equal(wrongType.status, 415);
});

test('a valid plan reaches the agent; refusals map to 409; unknown ids to 404', async () => {
  const { app, deployed, post } = setup();
  const ok = await post(good);
  assert.equal(ok.status, 201);
  assert.equal(deployed.length, 1);
  const full = await post({ ...good, service: { name: 'full', version: '1' } });
  assert.equal(full.status, 409);
  assert.match(((await full.json()) as { error: { message: string } }).error.message, /instance limit/);
  const missing = await app.request('/v1/instances/nope-1', { headers: auth });
  assert.equal(missing.status, 404);
  const logs = await app.request('/v1/instances/echo-1/logs?tail=7', { headers: auth });
  assert.equal(await logs.text(), 'last 7\n');
  assert.equal((await app.request('/v1/instances/echo-1/logs?tail=-1', { headers: auth })).status, 400);
  const metrics = await (await app.request('/metrics', { headers: auth })).text();
  assert.match(metrics, /shoal_host_deployments_total\{result="ok"\} 1/);
  assert.match(metrics, /shoal_host_deployments_total\{result="refused"\} 1/);
});

test('events stream as server-sent events, resuming after Last-Event-ID', async () => {
  const { app, events } = setup();
  events.emit({ type: 'started', instance: 'a-1', service: 'a' });
  events.emit({ type: 'ready', instance: 'a-1', service: 'a' });
  const ac = new AbortController();
  const res = await app.request('/v1/events', { headers: { ...auth, 'last-event-id': '1' }, signal: ac.signal });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
  const reader = res.body!.getReader();
  events.emit({ type: 'crashed', instance: 'a-1', service: 'a', code: 3 });
  let text = '';
  while (!/event: crashed/.test(text)) {
    const { value, done } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
  }
  ac.abort();
  await reader.cancel().catch(() => {});
  assert.doesNotMatch(text, /event: started/);
  assert.match(text, /event: ready\ndata: .*"seq":2.*\nid: 2\n/);
  assert.ok(text.startsWith(': connected'), text);
  assert.match(text, /"code":3/);
});

test('the OpenAPI document is 3.1 and carries the plan schema', async () => {
  const { app } = setup();
  const doc = (await (await app.request('/openapi.json')).json()) as { openapi: string; paths: Record<string, any> };
  assert.equal(doc.openapi, '3.1.0');
  const schema = doc.paths['/v1/instances'].post.requestBody.content['application/json'].schema;
  assert.deepEqual(schema.required.sort(), ['image', 'resources', 'service', 'store']);
  assert.equal(fieldName('/imports/0/name'), 'imports[0].name');
  assert.throws(() => validatePlan({ ...good, resources: { ...good.resources, cpuMillis: 0 } }), /resources\.cpuMillis/);
});

test('a deployment whose caller left before the answer is undone', async () => {
  const removed: string[] = [];
  const agent = {
    async deploy() {
      await new Promise((r) => setTimeout(r, 100));
      return { endpoint: { instance: 'echo-9' }, timeline: { totalMs: 1 }, instance: { id: 'echo-9' } };
    },
    async remove(id: string) {
      removed.push(id);
    },
  } as unknown as Agent;
  const metrics = emptyHostMetrics();
  const app = createControlApi({ agent, token: TOKEN, events: createEventBus(), metrics, report: async () => ({ hostId: 'h' }) as HostReport, keepAliveMs: 50 });
  const gone = new AbortController();
  setTimeout(() => gone.abort(), 20);
  const res = await app.request('/v1/instances', {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...auth },
    body: JSON.stringify(good),
    signal: gone.signal,
  });
  assert.equal(res.status, 503);
  assert.deepEqual(removed, ['echo-9']);
});

test('DELETE /v1/warm/:service drops the warm containers of a removed service, or of its versions but keep; a bad name is 400', async () => {
  const drops: Array<[string, string | undefined]> = [];
  const agent = {
    dropWarm(service: string, keep?: string) {
      drops.push([service, keep]);
      return 2;
    },
  } as unknown as Agent;
  const app = createControlApi({ agent, token: TOKEN, events: createEventBus(), metrics: emptyHostMetrics(), report: async () => ({ hostId: 'h' }) as HostReport, keepAliveMs: 50 });
  const removed = await app.request('/v1/warm/echo', { method: 'DELETE', headers: auth });
  assert.equal(removed.status, 200);
  assert.deepEqual(await removed.json(), { service: 'echo', dropped: 2 });
  assert.equal((await app.request('/v1/warm/echo?keep=2', { method: 'DELETE', headers: auth })).status, 200);
  assert.deepEqual(drops, [['echo', undefined], ['echo', '2']]);
  const bad = await app.request('/v1/warm/Not_A_Name', { method: 'DELETE', headers: auth });
  assert.equal(bad.status, 400);
  assert.equal(((await bad.json()) as { error: { field: string } }).error.field, 'service');
  assert.equal((await app.request('/v1/warm/echo', { method: 'DELETE' })).status, 401);
  assert.equal(drops.length, 2);
});

test('live migration routes: the token first, offers and plans checked, then the agent', async () => {
  const calls: string[] = [];
  const offer = { address: '127.0.0.1:4567', key: 'c'.repeat(64), annotations: { 'org.shoal.vm.kernel': '6.1' } };
  const agent = {
    async receive(plan: DeploymentPlan) {
      calls.push(`receive ${plan.service.name}`);
      return { instance: 'echo-9', offer };
    },
    async accept(id: string) {
      calls.push(`accept ${id}`);
      return { endpoint: { instance: id }, timeline: { totalMs: 1 }, instance: { id } };
    },
    async abortIncoming(id: string) {
      calls.push(`abort ${id}`);
    },
    async migrate(id: string, o: typeof offer) {
      calls.push(`migrate ${id} ${o.address}`);
      return { id, totalMs: 5, downtimeMs: 1, heldMs: 2, bytes: 3 };
    },
    async resumeMigrated(id: string) {
      calls.push(`resume ${id}`);
    },
  } as unknown as Agent;
  const app = createControlApi({ agent, token: TOKEN, events: createEventBus(), metrics: emptyHostMetrics(), report: async () => ({ hostId: 'h' }) as HostReport });
  const req = (method: string, path: string, body?: unknown, headers: Record<string, string> = auth) =>
    app.request(path, { method, headers: { 'content-type': 'application/json', ...headers }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  for (const [method, path] of [['POST', '/v1/incoming'], ['POST', '/v1/incoming/x/accept'], ['DELETE', '/v1/incoming/x'], ['POST', '/v1/instances/x/migrate'], ['POST', '/v1/instances/x/migrate/resume']] as const) {
    assert.equal((await req(method, path, {}, {})).status, 401, path);
  }
  assert.equal(calls.length, 0);
  const badPlan = await req('POST', '/v1/incoming', { ...good, surprise: 1 });
  assert.equal(badPlan.status, 400);
  for (const [body, field] of [
    [{ ...offer, key: 'not-hex' }, 'key'],
    [{ ...offer, address: 'no port' }, 'address'],
    [{ address: offer.address, key: offer.key }, 'annotations'],
    [{ ...offer, extra: 1 }, 'extra'],
  ] as const) {
    const res = await req('POST', '/v1/instances/echo-1/migrate', body);
    assert.equal(res.status, 400, field);
    assert.equal(((await res.json()) as { error: { field: string } }).error.field, field);
  }
  assert.equal(calls.length, 0, 'nothing malformed reached the agent');
  const offered = await req('POST', '/v1/incoming', good);
  assert.equal(offered.status, 201);
  assert.deepEqual(await offered.json(), { instance: 'echo-9', offer });
  assert.equal((await req('POST', '/v1/incoming/echo-9/accept')).status, 201);
  assert.equal((await req('DELETE', '/v1/incoming/echo-9')).status, 200);
  const sent = await req('POST', '/v1/instances/echo-1/migrate', offer);
  assert.equal(sent.status, 200);
  assert.equal(((await sent.json()) as { downtimeMs: number }).downtimeMs, 1);
  assert.equal((await req('POST', '/v1/instances/echo-1/migrate/resume')).status, 200);
  assert.deepEqual(calls, ['receive echo', 'accept echo-9', 'abort echo-9', 'migrate echo-1 127.0.0.1:4567', 'resume echo-1']);
});
