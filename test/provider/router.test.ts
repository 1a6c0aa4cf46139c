// The message path: message safety (schema → 400 naming the field), unknown names → 404,
// least-outstanding balancing, and what happens when an instance fails under a message
// (not delivered → another instance; delivered and lost → 502 unless idempotent).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { adminAuth, startFarm, until } from './fixtures/provider.ts';
import { ECHO_TEST_SERVICE } from './fixtures/fake-host.ts';

const quiet = { ...ECHO_TEST_SERVICE, scaling: { targetConcurrency: 1000, idleTimeoutMs: 600_000 } };

test('message safety: a body that fails the input schema is refused 400 naming the field, before any deployment', async (t) => {
  const farm = await startFarm(t, { hosts: 1 });
  const missing = await farm.call('Echo', {});
  assert.equal(missing.status, 400);
  assert.equal(missing.body.error.code, 'invalid');
  assert.equal(missing.body.error.field, '/message');
  assert.match(missing.body.error.message, /\/message is required/);
  const wrongType = await farm.call('Echo', { message: 42 });
  assert.equal(wrongType.status, 400);
  assert.equal(wrongType.body.error.field, '/message');
  assert.match(wrongType.body.error.message, /must be string, got integer/);
  const res = await fetch(`${farm.provider.url}/s/echo/Echo`, { method: 'POST', headers: { ...adminAuth(farm.provider.url), 'content-type': 'application/json' }, body: '{"message": nope' });
  assert.equal(res.status, 400);
  assert.equal(((await res.json()) as any).error.field, 'body');
  assert.equal(farm.hosts[0]!.plans.length, 0, 'nothing was deployed for refused messages');
});

test('unknown service or operation → 404 naming which; other methods → 405; an empty body is {}', async (t) => {
  const farm = await startFarm(t, { hosts: 1 });
  const noService = await farm.call('Echo', { message: 'x' }, 'nope');
  assert.equal(noService.status, 404);
  assert.equal(noService.body.error.field, 'service');
  const noOp = await farm.call('Nope', {});
  assert.equal(noOp.status, 404);
  assert.equal(noOp.body.error.field, 'operation');
  assert.match(noOp.body.error.message, /has no operation "Nope" \(it has: Echo/);
  const auth = { headers: adminAuth(farm.provider.url) };
  assert.equal((await fetch(`${farm.provider.url}/s/echo`, { method: 'POST', ...auth })).status, 404);
  const get = await fetch(`${farm.provider.url}/s/echo/Echo`, auth);
  assert.equal(get.status, 405);
  assert.equal(get.headers.get('allow'), 'POST');
  const empty = await fetch(`${farm.provider.url}/s/echo/Who`, { method: 'POST', ...auth });
  assert.equal(empty.status, 200);
  assert.equal(farm.hosts[0]!.plans.length, 1);
});

test('a body over the limit → 413', async (t) => {
  const farm = await startFarm(t, { hosts: 1, tuning: { maxBodyBytes: 1024 } });
  const r = await farm.call('Echo', { message: 'x'.repeat(2000) });
  assert.equal(r.status, 413);
  assert.equal(r.body.error.code, 'too-large');
});

test('replies pass through with their status and headers; the instance is named', async (t) => {
  const farm = await startFarm(t, { hosts: 1, service: quiet });
  const r = await farm.call('Echo', { message: 'hi', extra: [1, 2] });
  assert.equal(r.status, 200);
  assert.deepEqual(r.body, { message: 'hi', extra: [1, 2] });
  assert.match(r.headers.get('x-shoal-instance') ?? '', /^echo-/);
});

test('least outstanding: concurrent messages spread evenly over two instances', async (t) => {
  const farm = await startFarm(t, { hosts: 2, service: quiet });
  const out = await farm.provider.deploy('echo', 2);
  assert.equal(out.ready.length, 2);
  // Each reply is held long enough that all 40 are in flight together even on a loaded machine.
  const replies = await Promise.all(Array.from({ length: 40 }, () => farm.call('Slow', { ms: 1500 })));
  const counts = new Map<string, number>();
  for (const r of replies) counts.set(r.body.instance, (counts.get(r.body.instance) ?? 0) + 1);
  assert.deepEqual([...counts.values()], [20, 20]);
});

test('an instance crashing under a message: non-idempotent → 502, idempotent → answered by another instance', async (t) => {
  const farm = await startFarm(t, { hosts: 2, service: quiet });
  await farm.provider.deploy('echo', 1);
  const [a] = farm.provider.table.endpoints('echo');
  const hostOf = (id: string) => farm.hosts.find((h) => h.instances.has(id))!;
  // Both messages go to a (the only instance); then a second instance comes up; then a dies.
  const write = farm.call('Write', { ms: 1000 });
  const slow = farm.call('Slow', { ms: 1000 });
  await until('both on a', () => (hostOf(a!.id).received.get(a!.id) ?? 0) >= 2);
  await farm.provider.deploy('echo', 1);
  const b = farm.provider.table.endpoints('echo').find((e) => e.id !== a!.id);
  assert.ok(b);
  hostOf(a!.id).crash(a!.id);
  const [w, s] = await Promise.all([write, slow]);
  assert.equal(w.status, 502);
  assert.match(w.body.error.message, /closed the connection without answering/);
  assert.equal(s.status, 200);
  assert.equal(s.body.instance, b.id, 'the idempotent message was retried on the other instance');
});

test('after its crash event no message is routed to the dead instance', async (t) => {
  const farm = await startFarm(t, { hosts: 2, service: quiet });
  await farm.provider.deploy('echo', 2);
  const [dead] = farm.provider.table.endpoints('echo');
  let removedAt: number | undefined;
  const routedAfter: string[] = [];
  farm.provider.events.on('removed', (ep) => {
    if (ep.id === dead!.id) removedAt = performance.now();
  });
  farm.provider.events.on('routed', (ep) => {
    if (removedAt !== undefined && ep.id === dead!.id) routedAfter.push(ep.id);
  });
  // Traffic all along; the instance crashes in the middle of it.
  let stop = false;
  const traffic = (async () => {
    const statuses: number[] = [];
    while (!stop) statuses.push((await farm.call('Echo', { message: 'x' })).status);
    return statuses;
  })();
  await new Promise((r) => setTimeout(r, 100));
  farm.hosts.find((h) => h.instances.has(dead!.id))!.crash(dead!.id);
  await until('removed', () => removedAt !== undefined);
  await new Promise((r) => setTimeout(r, 200));
  stop = true;
  const statuses = await traffic;
  assert.deepEqual(routedAfter, []);
  assert.ok(statuses.every((s) => s === 200), `every message answered: ${[...new Set(statuses)]}`);
  assert.equal(farm.provider.table.endpoint(dead!.id), undefined);
  await until('recorded as failed', async () => (await farm.provider.registry.listDeployments({ service: 'echo' })).some((d) => d.instanceId === dead!.id && d.state === 'failed'));
});

test('an instance its host no longer has (404 from the host) leaves routing; the message goes elsewhere', async (t) => {
  const farm = await startFarm(t, { hosts: 1, service: quiet });
  await farm.provider.deploy('echo', 2);
  const [first] = farm.provider.table.endpoints('echo');
  farm.hosts[0]!.instances.delete(first!.id); // gone, no event
  // The balancer may pick the other one for a while: send until the gone one was tried.
  for (let i = 0; i < 40 && farm.provider.table.endpoint(first!.id) !== undefined; i++) {
    assert.equal((await farm.call('Echo', { message: `m${i}` })).status, 200);
  }
  assert.equal(farm.provider.table.endpoint(first!.id), undefined);
  assert.equal((await farm.call('Echo', { message: 'after' })).status, 200);
});

test('a host that stops answering: its endpoints leave routing, messages go to the other host', async (t) => {
  const farm = await startFarm(t, { hosts: 2, service: quiet, tuning: { deadAfterMs: 60_000, suspectAfterMs: 60_000 } });
  await farm.provider.deploy('echo', 2);
  const eps = farm.provider.table.endpoints('echo');
  assert.equal(new Set(eps.map((e) => e.hostId)).size, 2);
  const gone = farm.hosts.find((h) => h.id === eps[0]!.hostId)!;
  await gone.kill();
  for (let i = 0; i < 6; i++) {
    const r = await farm.call('Write', { ms: 1 });
    assert.equal(r.status, 200, 'not delivered, so even a non-idempotent message is retried');
  }
  assert.ok(farm.provider.table.endpoints('echo').every((e) => e.hostId !== gone.id));
});

test("an instance's own 404, 502 or 503, however worded, is passed on: the endpoint stays and nothing is retried", async (t) => {
  const farm = await startFarm(t, { hosts: 1, service: quiet });
  await farm.provider.deploy('echo', 2);
  const before = farm.provider.table.endpoints('echo').map((e) => e.id).sort();
  const host = farm.hosts[0]!;
  for (const status of [404, 502, 503]) {
    const sent = [...host.received.values()].reduce((a, b) => a + b, 0);
    const r = await farm.call('Mimic', { status });
    assert.equal(r.status, status);
    assert.match(r.body.error.message, /not answering \(ECONNREFUSED\), not ready/);
    assert.equal(r.headers.get('x-shoal-error'), null);
    assert.equal([...host.received.values()].reduce((a, b) => a + b, 0), sent + 1, `${status}: delivered once, not retried`);
  }
  assert.deepEqual(farm.provider.table.endpoints('echo').map((e) => e.id).sort(), before);
});

test("the host's 503 not-ready (x-shoal-error) sends the message elsewhere and keeps the endpoint; with nowhere else it is passed on", async (t) => {
  const farm = await startFarm(t, { hosts: 1, service: quiet });
  await farm.provider.deploy('echo', 2);
  const [a, b] = farm.provider.table.endpoints('echo');
  const host = farm.hosts[0]!;
  host.notReady.add(a!.id);
  for (let i = 0; i < 6; i++) {
    const r = await farm.call('Write', { ms: 1 });
    assert.equal(r.status, 200, 'not delivered, so even a non-idempotent message goes elsewhere');
    assert.equal(r.body.instance, b!.id);
  }
  assert.ok(farm.provider.table.endpoint(a!.id), 'a starting instance stays in routing');
  host.notReady.add(b!.id);
  const r = await farm.call('Write', { ms: 1 });
  assert.equal(r.status, 503);
  assert.equal(r.headers.get('x-shoal-error'), 'not-ready');
  assert.match(r.body.error.message, /not ready/);
});

test('an expired route token: the router has its host re-sign once and resends; the consumer sees only 200s', async (t) => {
  // Sync (and its ahead-of-expiry refresh) is far off: only the router's refresh can help.
  const farm = await startFarm(t, { hosts: [{ tokenTtlMs: 300 }], service: quiet, tuning: { syncIntervalMs: 600_000 } });
  assert.equal((await farm.call('Echo', { message: 'a' })).status, 200);
  await new Promise((r) => setTimeout(r, 400)); // the token handed out at deployment has expired
  const statuses: number[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await farm.call('Write', { n: i });
    statuses.push(r.status);
    assert.equal(r.headers.get('x-shoal-error'), null);
  }
  assert.deepEqual(statuses, [200, 200, 200]);
  const host = farm.hosts[0]!;
  assert.ok(host.tokenRefusals >= 1, 'the host did refuse the expired token');
  assert.ok(host.tokensResigned >= 1, 'and re-signed one for the provider');
  assert.equal(farm.provider.table.endpoints('echo').length, 1, 'the endpoint stayed in routing');
});

test('route tokens are refreshed ahead of expiry by the sync pass: the host never has to refuse one', async (t) => {
  const farm = await startFarm(t, { hosts: [{ tokenTtlMs: 1500 }], service: quiet, tuning: { syncIntervalMs: 100, tokenRefreshWithinMs: 1200 } });
  const until = Date.now() + 3500; // more than two token lifetimes
  let n = 0;
  while (Date.now() < until) {
    const r = await farm.call('Echo', { message: String(n++) });
    assert.equal(r.status, 200);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const host = farm.hosts[0]!;
  assert.equal(host.tokenRefusals, 0);
  assert.ok(host.tokensResigned >= 2, `re-signed ${host.tokensResigned} times`);
});

test('a reply served from the provider origin cannot script it or set its cookies: set-cookie dropped, sandboxed, nosniff (small and streamed)', async (t) => {
  const farm = await startFarm(t, { hosts: 1, service: quiet });
  for (const pad of [0, 256 * 1024]) {
    const res = await fetch(`${farm.provider.url}/s/echo/Html`, {
      method: 'POST',
      headers: { ...adminAuth(farm.provider.url), 'content-type': 'application/json' },
      body: JSON.stringify({ pad }),
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'text/html', 'the instance still chooses its content type');
    assert.equal(res.headers.get('set-cookie'), null, `pad ${pad}: no cookie reaches the consumer`);
    assert.match(res.headers.get('content-security-policy') ?? '', /^sandbox; default-src 'none'/, `pad ${pad}`);
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    assert.match(await res.text(), /^<script>/);
  }
});
