// The control plane alone: a real SQLite registry and routing table, a recording deployer
// and host pool. What registering, removing and deploying do, in which order, and that a
// failed event write is logged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInFlightTracker } from '../../src/provider/balancer/index.ts';
import { createControlPlane } from '../../src/provider/control-plane.ts';
import type { HostPool, PoolHost } from '../../src/provider/host-pool.ts';
import { openRegistry, type Registry } from '../../src/provider/registry/index.ts';
import { createRoutingTable, type RouteEndpoint } from '../../src/provider/routing-table.ts';
import { isShoalError } from '../../src/protocol/errors.ts';
import { ECHO_TEST_SERVICE } from './fixtures/fake-host.ts';

async function setup(t: { after(fn: () => Promise<void>): void }, o: { failEvents?: boolean } = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-control-'));
  const real = await openRegistry({ sqlitePath: join(dir, 'shoal.db') });
  t.after(async () => {
    await real.close();
    await rm(dir, { recursive: true, force: true });
  });
  const registry = new Proxy(real, {
    get(target, prop) {
      if (prop === 'appendEvent' && o.failEvents) return async () => Promise.reject(new Error('database is locked'));
      const v = Reflect.get(target, prop);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  }) as Registry;
  const table = createRoutingTable({ tracker: createInFlightTracker() });
  const calls: string[] = [];
  const logged: Array<{ msg: string | undefined; obj: object }> = [];
  const control = createControlPlane({
    registry,
    table,
    pool: {
      register: async (req) => {
        calls.push(`pool.register ${req.controlUrl}`);
        return { id: 'h1' } as PoolHost;
      },
      remove: async (id) => {
        calls.push(`pool.remove ${id}`);
        return id === 'h1';
      },
      list: () =>
        (['h1', 'h2', 'h3'] as const).map((id) => ({
          id,
          state: id === 'h3' ? 'dead' : 'alive',
          client: {
            dropWarm: async (service: string, keep?: string) => {
              calls.push(`dropWarm ${id} ${service}${keep === undefined ? '' : ` keep ${keep}`}`);
              if (id === 'h2') throw new Error('host h2 is unreachable');
              return 1;
            },
          },
        })) as unknown as PoolHost[],
    } as Partial<HostPool> as HostPool,
    deployer: {
      deploy: async (service, d) => {
        calls.push(`deploy ${service} ${d.count} ${d.reason}`);
        return { ready: [], deployments: [], errors: [] };
      },
      undeploy: async (ep, reason) => {
        calls.push(`undeploy ${ep.id} ${reason}`);
        table.remove(ep.id, reason);
      },
      stopDeployment: async (d, reason) => {
        calls.push(`stop ${d.id} ${reason}`);
      },
      prepare: (service) => calls.push(`prepare ${service}`),
    },
    resetCooldown: (service) => calls.push(`reset ${service ?? '*'}`),
    failWaiting: (service, reason) => calls.push(`fail ${service}: ${reason}`),
    log: { info() {}, warn: (obj, msg) => logged.push({ obj, msg }), error: (obj, msg) => logged.push({ obj, msg }) },
  });
  const endpoint = (id: string, version: string) => ({ id, service: 'echo', version, deploymentId: `d-${id}`, hostId: 'h1', readyAt: 0 }) as unknown as RouteEndpoint;
  return { registry: real, table, control, calls, logged, endpoint };
}

test('registering stores the description, installs it for routing, resets its cooldown and resolves its image ahead', async (t) => {
  const s = await setup(t);
  const first = await s.control.registerService(ECHO_TEST_SERVICE);
  assert.equal(first.created, true);
  assert.equal(first.service.version, '1');
  assert.equal((await s.registry.getService('echo'))?.version, '1');
  assert.deepEqual([...(s.table.service('echo')?.operations.keys() ?? [])].sort(), Object.keys(ECHO_TEST_SERVICE.operations).sort());
  assert.deepEqual(s.calls, ['reset echo', 'prepare echo']);
  // The same version again: nothing new.
  assert.equal((await s.control.registerService(ECHO_TEST_SERVICE)).created, false);
  const events = await s.registry.listEvents({ kind: 'service-registered' });
  assert.equal(events.length, 2);
});

test('a new version drains the instances of the old one', async (t) => {
  const s = await setup(t);
  await s.control.registerService(ECHO_TEST_SERVICE);
  s.table.add(s.endpoint('old-1', '1'));
  s.table.add(s.endpoint('old-2', '1'));
  s.calls.length = 0;
  const r = await s.control.registerService({ ...ECHO_TEST_SERVICE, version: '2' });
  assert.equal(r.created, true);
  assert.equal(s.table.service('echo')?.version, '2');
  assert.deepEqual(s.calls, ['reset echo', 'prepare echo', 'undeploy old-1 undeployed', 'undeploy old-2 undeployed', 'dropWarm h1 echo keep 2', 'dropWarm h2 echo keep 2']);
  await new Promise((r) => setImmediate(r));
  assert.ok(s.logged.some((l) => /drop warm containers/.test(l.msg ?? '')), 'a host that cannot be told is logged');
});

test('a bad description is refused naming the field, and nothing is stored or routed', async (t) => {
  const s = await setup(t);
  await assert.rejects(s.control.registerService({ ...ECHO_TEST_SERVICE, name: 'Not A Name' }), (e: unknown) => isShoalError(e) && e.code === 'invalid' && e.field === '/name');
  await assert.rejects(s.control.registerService('echo'), (e: unknown) => isShoalError(e) && e.code === 'invalid');
  assert.equal(await s.registry.getService('echo'), undefined);
  assert.equal(s.table.services().length, 0);
  assert.deepEqual(s.calls, []);
});

test('removing a service answers its waiting messages and stops its deployments; an unknown one is not-found', async (t) => {
  const s = await setup(t);
  await s.control.registerService(ECHO_TEST_SERVICE);
  const d = await s.registry.createDeployment({ service: 'echo', version: '1', state: 'ready', hostId: 'h1', instanceId: 'echo-1', claimedBy: 'p' });
  s.calls.length = 0;
  assert.deepEqual(await s.control.removeService('echo'), { stopped: 1 });
  assert.equal(s.table.service('echo'), undefined);
  assert.equal(await s.registry.getService('echo'), undefined);
  assert.deepEqual(s.calls, ['fail echo: service echo was removed', `stop ${d.id} service removed`, 'dropWarm h1 echo', 'dropWarm h2 echo']);
  await assert.rejects(s.control.removeService('echo'), (e: unknown) => isShoalError(e) && e.code === 'not-found');
});

test('deploying: an unknown service is not-found; ensureInstance deploys only when none is up', async (t) => {
  const s = await setup(t);
  await assert.rejects(s.control.deploy('echo'), (e: unknown) => isShoalError(e) && e.code === 'not-found' && e.field === 'name');
  await s.control.registerService(ECHO_TEST_SERVICE);
  s.calls.length = 0;
  await s.control.deploy('echo', { count: 3 });
  assert.equal(await s.control.ensureInstance('echo').then((o) => o !== undefined), true);
  s.table.add(s.endpoint('up', '1'));
  assert.equal(await s.control.ensureInstance('echo'), undefined);
  assert.deepEqual(s.calls, ['deploy echo 3 scale', 'deploy echo 1 scale']);
});

test('a host registered through the control plane resets every cooldown (it may take what failed before)', async (t) => {
  const s = await setup(t);
  assert.equal((await s.control.registerHost({ controlUrl: 'http://127.0.0.1:1', token: 'token-123' })).id, 'h1');
  assert.equal(await s.control.removeHost('h1'), true);
  assert.equal(await s.control.removeHost('nope'), false);
  assert.deepEqual(s.calls, ['pool.register http://127.0.0.1:1', 'reset *', 'pool.remove h1', 'pool.remove nope']);
});

test('a failed event write does not fail the registration, and is logged with the service', async (t) => {
  const s = await setup(t, { failEvents: true });
  assert.equal((await s.control.registerService(ECHO_TEST_SERVICE)).created, true);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(s.logged, [{ obj: { service: 'echo', err: 'database is locked' }, msg: 'registry write failed: the service-registered event' }]);
});
