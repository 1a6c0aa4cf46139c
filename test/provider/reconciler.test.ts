// The reconciler alone, on a real SQLite registry, a real host pool and fake hosts: the
// start-up pass (route, stop, adopt, remove, fail), instance events, a dead host's
// instances redeployed through the control plane, folding in other providers' changes,
// and failed registry writes logged rather than dropped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInFlightTracker } from '../../src/provider/balancer/index.ts';
import { createHostPool, type PoolHost } from '../../src/provider/host-pool.ts';
import { createReconciler } from '../../src/provider/reconciler.ts';
import { openRegistry, type Registry } from '../../src/provider/registry/index.ts';
import { createRoutingTable, type RouteEndpoint } from '../../src/provider/routing-table.ts';
import { validateServiceDescription } from '../../src/protocol/service.ts';
import type { DeploymentResult, EndpointReference, HostEvent } from '../../src/protocol/deployment.ts';
import { ShoalError } from '../../src/protocol/errors.ts';
import { ECHO_TEST_SERVICE, startFakeHost, type FakeHost } from './fixtures/fake-host.ts';
import { until } from './fixtures/provider.ts';

const PROVIDER = 'provider-a';

async function setup(t: { after(fn: () => Promise<void>): void }, o: { hosts?: number; registry?: (r: Registry) => Registry } = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-reconciler-'));
  const real = await openRegistry({ sqlitePath: join(dir, 'shoal.db') });
  const registry = o.registry ? o.registry(real) : real;
  const hosts = await Promise.all(Array.from({ length: o.hosts ?? 1 }, () => startFakeHost()));
  const logged: Array<{ level: string; msg: string | undefined; obj: object }> = [];
  const log = {
    info: (obj: object, msg?: string) => logged.push({ level: 'info', msg, obj }),
    warn: (obj: object, msg?: string) => logged.push({ level: 'warn', msg, obj }),
    error: (obj: object, msg?: string) => logged.push({ level: 'error', msg, obj }),
  };
  const tracker = createInFlightTracker();
  const table = createRoutingTable({ tracker });
  const pool = createHostPool({ registry, log, reportIntervalMs: 50, suspectAfterMs: 150, deadAfterMs: 300 });
  const redeploys: Array<{ service: string; count: number | undefined; exclude: readonly string[] | undefined }> = [];
  const reconciler = createReconciler({
    registry,
    pool,
    table,
    deployer: {
      endpointOf: (ref: EndpointReference, deploymentId: string, host: PoolHost, version: string, deployedBy: string | undefined) =>
        ({ id: ref.instance, service: ref.service.name, version, deploymentId, hostId: host.id, token: ref.token, expiresAt: ref.expiresAt, readyAt: Date.now(), deployedBy }) as unknown as RouteEndpoint,
    },
    control: {
      deploy: async (service, d = {}) => {
        redeploys.push({ service, count: d.count, exclude: d.exclude });
        return { ready: [], deployments: [], errors: [] };
      },
    },
    providerId: PROVIDER,
    log,
    syncIntervalMs: 60_000,
  });
  t.after(async () => {
    await reconciler.close();
    await pool.close();
    await Promise.all(hosts.map((h) => h.close()));
    await real.close();
    await rm(dir, { recursive: true, force: true });
  });
  await real.putService(validateServiceDescription(ECHO_TEST_SERVICE));
  const pooled: PoolHost[] = [];
  for (const h of hosts) pooled.push(await pool.register({ controlUrl: h.controlUrl, token: h.token }));
  /** An instance started on a host behind the provider's back (what a deployment leaves there). */
  async function deployOn(host: FakeHost, service = 'echo'): Promise<DeploymentResult> {
    const res = await fetch(`${host.controlUrl}/v1/instances`, {
      method: 'POST',
      headers: { authorization: `Bearer ${host.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ service: { name: service, version: '1' }, image: `${service}:1`, store: 'http://127.0.0.1:1', resources: { memoryMb: 128, cpuMillis: 500, pids: 64 } }),
    });
    assert.equal(res.status, 201);
    return (await res.json()) as DeploymentResult;
  }
  return { registry: real, hosts, pooled, table, pool, reconciler, redeploys, logged, deployOn };
}

test('start-up: recorded instances go back into routing, vanished ones are stopped, unrecorded ones adopted or removed', async (t) => {
  const s = await setup(t);
  const host = s.hosts[0]!;
  const hostId = s.pooled[0]!.id;
  const live = await s.deployOn(host);
  const liveRecord = await s.registry.createDeployment({ service: 'echo', version: '1', state: 'ready', hostId, instanceId: live.instance.id, endpoint: live.endpoint, claimedBy: 'provider-b' });
  const vanished = await s.registry.createDeployment({ service: 'echo', version: '1', state: 'ready', hostId, instanceId: 'echo-gone', endpoint: { ...live.endpoint, instance: 'echo-gone' }, claimedBy: PROVIDER });
  const orphan = await s.deployOn(host); // nobody recorded it (a provider died between reply and write)
  const stray = await s.deployOn(host, 'unknown-service');
  const counts = await s.reconciler.reconcile();
  assert.deepEqual(counts, { routed: 1, stopped: 1, adopted: 1, removed: 1, failed: 0 });
  assert.deepEqual(s.table.endpoints('echo').map((e) => e.id).sort(), [live.instance.id, orphan.instance.id].sort());
  assert.equal(s.table.endpoint(live.instance.id)?.deploymentId, liveRecord.id);
  assert.equal((await s.registry.getDeployment(vanished.id))?.state, 'stopped');
  assert.deepEqual(host.removed, [stray.instance.id]);
  const adopted = (await s.registry.listDeployments({ service: 'echo', state: 'ready' })).find((d) => d.instanceId === orphan.instance.id);
  assert.equal(adopted?.claimedBy, PROVIDER);
});

test("start-up: this provider's own claim left in flight is adopted if its instance came up, else failed", async (t) => {
  const s = await setup(t, { hosts: 2 });
  const [a, b] = s.pooled as [PoolHost, PoolHost];
  const c1 = await s.registry.claimDeployment({ service: 'echo', version: '1', providerId: PROVIDER, now: Date.now(), leaseMs: 60_000, hostId: a.id });
  assert.ok(c1.claimed);
  const made = await s.deployOn(s.hosts[0]!);
  const counts = await s.reconciler.reconcile();
  assert.equal(counts.adopted, 1);
  const record = await s.registry.getDeployment(c1.deployment.id);
  assert.equal(record?.state, 'ready');
  assert.equal(record?.instanceId, made.instance.id);

  // A claim whose instance never came up cannot be finished.
  const c2 = await s.registry.claimDeployment({ service: 'echo', version: '1', providerId: PROVIDER, now: Date.now(), leaseMs: 60_000, hostId: b.id, mode: 'add' });
  assert.ok(c2.claimed);
  assert.equal((await s.reconciler.reconcile()).failed, 1);
  const failed = await s.registry.getDeployment(c2.deployment.id);
  assert.equal(failed?.state, 'failed');
  assert.match(failed?.error ?? '', /restarted before the deployment finished/);
});

test('a crashed instance leaves routing the moment its event arrives; the registry learns afterwards', async (t) => {
  const s = await setup(t);
  const host = s.hosts[0]!;
  const made = await s.deployOn(host);
  const record = await s.registry.createDeployment({ service: 'echo', version: '1', state: 'ready', hostId: s.pooled[0]!.id, instanceId: made.instance.id, endpoint: made.endpoint, claimedBy: PROVIDER });
  await s.reconciler.reconcile();
  assert.equal(s.table.endpoints('echo').length, 1);
  const event: HostEvent = { seq: 1, type: 'crashed', instance: made.instance.id, service: 'echo', at: Date.now(), code: 3 };
  s.reconciler.onInstanceEvent(s.pooled[0]!, event);
  assert.equal(s.table.endpoints('echo').length, 0, 'out of routing synchronously');
  await until('recorded as failed', async () => (await s.registry.getDeployment(record.id))?.state === 'failed');
  assert.match((await s.registry.getDeployment(record.id))?.error ?? '', /crashed code 3/);
  await until('the event appended', async () => (await s.registry.listEvents({ kind: 'instance-crashed' })).length === 1);
  // An 'exited' instance is stopped, not failed; a 'started' event changes nothing.
  s.reconciler.onInstanceEvent(s.pooled[0]!, { ...event, seq: 2, type: 'started' } as HostEvent);
  assert.equal((await s.registry.getDeployment(record.id))?.state, 'failed');
});

test("a dead host decided here: its endpoints leave routing, its deployments fail, and its instances are redeployed elsewhere", async (t) => {
  const s = await setup(t, { hosts: 2 });
  const [a] = s.pooled as [PoolHost, PoolHost];
  for (let i = 0; i < 2; i++) {
    const made = await s.deployOn(s.hosts[0]!);
    await s.registry.createDeployment({ service: 'echo', version: '1', state: 'ready', hostId: a.id, instanceId: made.instance.id, endpoint: made.endpoint, claimedBy: PROVIDER });
  }
  await s.reconciler.reconcile();
  assert.equal(s.table.endpoints('echo').length, 2);
  s.reconciler.onHostState(a, 'suspect', 'dead', true);
  assert.equal(s.table.endpoints('echo').length, 0, 'out of routing at once');
  await until('redeployed', () => s.redeploys.length === 1);
  assert.deepEqual(s.redeploys, [{ service: 'echo', count: 2, exclude: [a.id] }]);
  const records = await s.registry.listDeployments({ hostId: a.id });
  assert.ok(records.every((d) => d.state === 'failed' && /is dead/.test(d.error ?? '')));
  await until('the redeploy event', async () => (await s.registry.listEvents({ kind: 'host-dead-redeployed' })).length === 1);

  // Seen from another provider's decision: out of routing, but no redeploy here.
  const s2 = await setup(t, { hosts: 1 });
  const made = await s2.deployOn(s2.hosts[0]!);
  await s2.registry.createDeployment({ service: 'echo', version: '1', state: 'ready', hostId: s2.pooled[0]!.id, instanceId: made.instance.id, endpoint: made.endpoint, claimedBy: 'provider-b' });
  await s2.reconciler.reconcile();
  s2.reconciler.onHostState(s2.pooled[0]!, 'suspect', 'dead', false);
  assert.equal(s2.table.endpoints('echo').length, 0);
  await s2.reconciler.close();
  assert.deepEqual(s2.redeploys, []);
});

test("sync folds in other providers' work: a new ready deployment is routed after its host confirms it; a stopped one leaves routing", async (t) => {
  const s = await setup(t);
  const host = s.hosts[0]!;
  await s.reconciler.reconcile();
  const made = await s.deployOn(host);
  const record = await s.registry.createDeployment({ service: 'echo', version: '1', state: 'ready', hostId: s.pooled[0]!.id, instanceId: made.instance.id, endpoint: made.endpoint, claimedBy: 'provider-b' });
  await s.reconciler.sync();
  assert.deepEqual(s.table.endpoints('echo').map((e) => e.id), [made.instance.id]);
  // A record naming an instance its host does not have is stopped, not routed.
  const ghost = await s.registry.createDeployment({ service: 'echo', version: '1', state: 'ready', hostId: s.pooled[0]!.id, instanceId: 'echo-ghost', endpoint: { ...made.endpoint, instance: 'echo-ghost' }, claimedBy: 'provider-b' });
  await s.reconciler.sync();
  assert.equal(s.table.endpoint('echo-ghost'), undefined);
  assert.equal((await s.registry.getDeployment(ghost.id))?.state, 'stopped');
  // The other provider stops its deployment: it leaves this provider's routing too (once past its first 2 s).
  await s.registry.updateDeployment(record.id, { state: 'stopped', error: 'scaled down' });
  (s.table.endpoint(made.instance.id) as { readyAt: number }).readyAt = Date.now() - 5000;
  await s.reconciler.sync();
  assert.equal(s.table.endpoints('echo').length, 0);
  // And a service another provider removed is forgotten.
  await s.registry.removeService('echo');
  await s.reconciler.sync();
  assert.equal(s.table.service('echo'), undefined);
});

test('a failed registry write is logged with its context; a refused conditional write is not an error', async (t) => {
  let failWrites = false;
  const s = await setup(t, {
    registry: (r) =>
      new Proxy(r, {
        get(target, prop, receiver) {
          if (prop === 'updateDeployment') {
            return async (...args: Parameters<Registry['updateDeployment']>) => {
              if (failWrites) throw new ShoalError('internal', 'disk I/O error');
              return target.updateDeployment(...args);
            };
          }
          const v = Reflect.get(target, prop, receiver);
          return typeof v === 'function' ? v.bind(target) : v;
        },
      }),
  });
  const made = await s.deployOn(s.hosts[0]!);
  const record = await s.registry.createDeployment({ service: 'echo', version: '1', state: 'ready', hostId: s.pooled[0]!.id, instanceId: made.instance.id, endpoint: made.endpoint, claimedBy: PROVIDER });
  await s.reconciler.reconcile();
  failWrites = true;
  s.reconciler.onInstanceEvent(s.pooled[0]!, { seq: 1, type: 'crashed', instance: made.instance.id, service: 'echo', at: Date.now() });
  await until('logged', () => s.logged.some((l) => l.level === 'error' && /registry write failed: recording an instance crashed/.test(l.msg ?? '')));
  const entry = s.logged.find((l) => /registry write failed/.test(l.msg ?? ''))!;
  assert.deepEqual(entry.obj, { deployment: record.id, instance: made.instance.id, host: s.pooled[0]!.id, err: 'disk I/O error' });
  assert.equal((await s.registry.getDeployment(record.id))?.state, 'ready', 'the write did fail');

  // A conditional write that finds the record already changed is 'someone else recorded it'.
  failWrites = false;
  await s.registry.updateDeployment(record.id, { state: 'stopped', error: 'undeployed' });
  const before = s.logged.filter((l) => l.level === 'error').length;
  s.reconciler.onInstanceEvent(s.pooled[0]!, { seq: 2, type: 'exited', instance: made.instance.id, service: 'echo', at: Date.now() });
  await s.reconciler.close();
  assert.equal(s.logged.filter((l) => l.level === 'error').length, before);
});
