// The deployer through a whole provider on fake hosts: one deployment per cold service
// however many messages, failures answered and retried elsewhere, no host, a full queue,
// scale to zero and back, moving a dead host's instances, and adopting after a restart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { adminAuth, startFarm, until } from './fixtures/provider.ts';

test('100 concurrent first messages: 100 correct replies, exactly one deployment', async (t) => {
  const { ECHO_TEST_SERVICE } = await import('./fixtures/fake-host.ts');
  // A target concurrency the burst cannot pass: the autoscaler stays out of it.
  const farm = await startFarm(t, { hosts: 2, service: { ...ECHO_TEST_SERVICE, scaling: { targetConcurrency: 1000 } } });
  farm.hosts.forEach((h) => (h.deployMs = 150));
  const replies = await Promise.all(Array.from({ length: 100 }, (_, i) => farm.call('Echo', { message: `m${i}` })));
  replies.forEach((r, i) => {
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(r.body, { message: `m${i}` });
  });
  assert.equal(farm.hosts.reduce((n, h) => n + h.plans.length, 0), 1, 'one plan sent');
  const deployments = await farm.provider.registry.listDeployments({ service: 'echo' });
  assert.equal(deployments.length, 1);
  assert.equal(deployments[0]!.state, 'ready');
  // The plan pins the image by digest.
  const plan = farm.hosts.flatMap((h) => h.plans)[0]!;
  assert.match(plan.image, /^echo@sha256:[0-9a-f]{64}$/);
  // The timeline has the provider's phases around the host's, and the first reply.
  await until('first reply recorded', async () => ((await farm.provider.registry.listDeployments({ service: 'echo' }))[0]!.timeline?.phases.some((p) => p.name === 'first-reply')) === true);
  const timeline = (await farm.provider.registry.listDeployments({ service: 'echo' }))[0]!.timeline!;
  assert.deepEqual(
    timeline.phases.map((p) => p.name),
    ['queue', 'place', 'admit', 'start', 'ready', 'first-reply'],
  );
  for (let i = 1; i < timeline.phases.length; i++) assert.ok(timeline.phases[i]!.startMs >= timeline.phases[i - 1]!.startMs, JSON.stringify(timeline.phases));
});

test('a failed deployment answers the waiting messages 503 with the reason, and the next attempt goes to another host', async (t) => {
  const farm = await startFarm(t, { hosts: 2, tuning: { backoffMs: 200 } });
  const [a, b] = farm.hosts as [(typeof farm.hosts)[0], (typeof farm.hosts)[0]];
  a.deployMs = 50;
  b.deployMs = 50;
  a.failNext(503, 'the instance exited before it was ready (exit code 3)');
  b.failNext(503, 'the instance exited before it was ready (exit code 3)');
  const first = await farm.call('Echo', { message: 'x' });
  assert.equal(first.status, 503);
  assert.match(first.body.error.message, /exited before it was ready/);
  assert.ok(Number(first.headers.get('retry-after')) >= 1);
  // The deployer keeps trying, on the other host, after a backoff; a later message finds it.
  await until('a ready instance', () => farm.provider.table.endpoints('echo').length === 1, 5000);
  const second = await farm.call('Echo', { message: 'y' });
  assert.equal(second.status, 200);
  const plans = farm.hosts.map((h) => h.plans.length);
  assert.deepEqual(plans.sort(), [1, 2], 'tried one host, then the other, then the first again');
  const records = await farm.provider.registry.listDeployments({ service: 'echo' });
  assert.deepEqual(records.map((r) => r.state).sort(), ['failed', 'failed', 'ready']);
  assert.notEqual(records[0]!.hostId, records[1]!.hostId, 'the second attempt went to another host');
});

test('attempts are bounded: after maxAttempts the service cools down and messages fail fast', async (t) => {
  const farm = await startFarm(t, { hosts: 1, tuning: { maxAttempts: 2, backoffMs: 20, cooldownMs: 60_000 } });
  farm.hosts[0]!.failNext(500, 'image unpack failed', 10);
  const r1 = await farm.call('Echo', { message: 'x' });
  assert.equal(r1.status, 503);
  await until('both attempts', () => farm.hosts[0]!.plans.length === 2);
  await new Promise((r) => setTimeout(r, 100));
  const started = Date.now();
  const r2 = await farm.call('Echo', { message: 'x' });
  assert.equal(r2.status, 503);
  assert.match(r2.body.error.message, /paused .* after 2 failed attempts/);
  assert.ok(Date.now() - started < 500, 'answered at once');
  assert.equal(farm.hosts[0]!.plans.length, 2, 'no third attempt during the cooldown');
});

test('no host can take it: 503 naming why each host was refused', async (t) => {
  const farm = await startFarm(t, { hosts: [{ capacity: { memoryMb: 64, cpuMillis: 8000, instances: 4 } }] });
  const r = await farm.call('Echo', { message: 'x' });
  assert.equal(r.status, 503);
  assert.match(r.body.error.message, /no host can run 'echo'.*needs 128 MB memory, 64 MB free/);
});

test('a full queue answers 503 with Retry-After at once; nothing is dropped silently', async (t) => {
  const farm = await startFarm(t, { hosts: 1, tuning: { queueDepth: 5 } });
  farm.hosts[0]!.deployMs = 300;
  const replies = await Promise.all(Array.from({ length: 8 }, () => farm.call('Echo', { message: 'q' })));
  const statuses = replies.map((r) => r.status).sort();
  assert.deepEqual(statuses, [200, 200, 200, 200, 200, 503, 503, 503]);
  for (const r of replies.filter((x) => x.status === 503)) {
    assert.equal(r.headers.get('retry-after'), '1');
    assert.match(r.body.error.message, /already wait/);
  }
});

test('scale to zero after the idle timeout, and back on the next message', async (t) => {
  const farm = await startFarm(t, { hosts: 1, service: { ...(await import('./fixtures/fake-host.ts')).ECHO_TEST_SERVICE, scaling: { idleTimeoutMs: 300 } } });
  assert.equal((await farm.call('Echo', { message: 'a' })).status, 200);
  assert.equal(farm.hosts[0]!.instances.size, 1);
  await until('scaled to zero', () => farm.hosts[0]!.instances.size === 0 && farm.provider.table.endpoints('echo').length === 0, 5000);
  // The registry records the stop right after the instance is gone (not in the same tick).
  await until('the deployment recorded as stopped', async () => {
    const records = await farm.provider.registry.listDeployments({ service: 'echo' });
    return records.length === 1 && records[0]!.state === 'stopped';
  }, 5000);
  const again = await farm.call('Echo', { message: 'b' });
  assert.equal(again.status, 200);
  assert.deepEqual(again.body, { message: 'b' });
  assert.equal(farm.hosts[0]!.plans.length, 2);
});

test('scale up under load: in-flight messages past the target add instances, spread over hosts', async (t) => {
  const { ECHO_TEST_SERVICE } = await import('./fixtures/fake-host.ts');
  const farm = await startFarm(t, { hosts: 3, service: { ...ECHO_TEST_SERVICE, scaling: { targetConcurrency: 2, max: 3, idleTimeoutMs: 60_000 } } });
  assert.equal((await farm.call('Who')).status, 200);
  const load = Promise.all(Array.from({ length: 6 }, () => farm.call('Slow', { ms: 1500 })));
  await until('three instances', () => farm.provider.table.endpoints('echo').length === 3, 5000);
  const hostsUsed = new Set(farm.provider.table.endpoints('echo').map((e) => e.hostId));
  assert.equal(hostsUsed.size, 3, 'spread: one per host');
  for (const r of await load) assert.equal(r.status, 200);
});

test("a dead host's instances are redeployed on another host", async (t) => {
  const { ECHO_TEST_SERVICE } = await import('./fixtures/fake-host.ts');
  const farm = await startFarm(t, { hosts: 2, service: { ...ECHO_TEST_SERVICE, placement: { policy: 'host-list', hosts: [] } }, register: false });
  for (const h of farm.hosts) await farm.provider.registerHost({ controlUrl: h.controlUrl, token: h.token });
  const [a, b] = farm.hosts as [(typeof farm.hosts)[0], (typeof farm.hosts)[0]];
  await farm.provider.registerService({ ...ECHO_TEST_SERVICE, scaling: { min: 1 }, placement: { hosts: [a.id, b.id] } });
  await until('min 1 deployed on the first host', () => farm.provider.table.endpoints('echo').some((e) => e.hostId === a.id), 5000);
  await a.kill();
  await until('moved to the other host', () => farm.provider.table.endpoints('echo').some((e) => e.hostId === b.id), 5000);
  assert.ok(farm.provider.table.endpoints('echo').every((e) => e.hostId === b.id));
  const r = await farm.call('Echo', { message: 'after' });
  assert.equal(r.status, 200);
  const host = await farm.provider.registry.getHost(a.id);
  assert.equal(host?.state, 'dead');
  const records = await farm.provider.registry.listDeployments({ service: 'echo' });
  assert.ok(records.some((d) => d.hostId === a.id && d.state === 'failed' && /is dead/.test(d.error ?? '')));
  assert.ok(records.some((d) => d.hostId === b.id && d.state === 'ready'));
});

test('a restarted provider routes to the instances it had, without deploying again', async (t) => {
  const farm = await startFarm(t, { hosts: 1 });
  assert.equal((await farm.call('Echo', { message: 'one' })).status, 200);
  await farm.provider.close();
  const again = await farm.another();
  assert.equal(again.table.endpoints('echo').length, 1, 'back in routing from the start-up pass');
  const res = await fetch(`${again.url}/s/echo/Echo`, { method: 'POST', headers: { ...adminAuth(again.url), 'content-type': 'application/json' }, body: '{"message":"two"}' });
  assert.equal(res.status, 200);
  assert.equal(farm.hosts[0]!.plans.length, 1, 'no second deployment');
});

test('an instance the registry never recorded (provider died mid-deploy) is adopted on restart', async (t) => {
  const farm = await startFarm(t, { hosts: 1 });
  // What a provider killed between the host's reply and its registry write leaves: a
  // claim in flight (its own, under the same id) and an instance nobody recorded.
  const providerId = farm.provider.providerId;
  await farm.provider.close();
  const claim = await (await import('../../src/provider/registry/index.ts')).openRegistry({ url: farm.database });
  const c = await claim.claimDeployment({ service: 'echo', version: '1', providerId, now: Date.now(), leaseMs: 60_000, hostId: farm.hosts[0]!.id });
  assert.equal(c.claimed, true);
  await claim.close();
  const res = await fetch(`${farm.hosts[0]!.controlUrl}/v1/instances`, {
    method: 'POST',
    headers: { authorization: `Bearer ${farm.hosts[0]!.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ service: { name: 'echo', version: '1' }, image: 'echo:1', store: farm.store.url, resources: { memoryMb: 128, cpuMillis: 500, pids: 64 } }),
  });
  assert.equal(res.status, 201);
  const again = await farm.another({ providerId });
  assert.equal(again.table.endpoints('echo').length, 1);
  const records = await again.registry.listDeployments({ service: 'echo' });
  assert.deepEqual(records.map((r) => r.state), ['ready']);
  assert.equal((await fetch(`${again.url}/s/echo/Echo`, { method: 'POST', headers: { ...adminAuth(again.url), 'content-type': 'application/json' }, body: '{"message":"x"}' })).status, 200);
  assert.equal(farm.hosts[0]!.plans.length, 1);
});
