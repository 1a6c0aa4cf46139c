// The scaling loop alone: a real routing table and in-flight tracker, a recording
// deployer, an injected clock. Up under load (not while a deployment is under way), down
// to zero after the idle timeout, only the instances this provider deployed, least busy
// first; a failed scale-up is logged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createInFlightTracker } from '../../src/provider/balancer/index.ts';
import { createRoutingTable, type RouteEndpoint } from '../../src/provider/routing-table.ts';
import { createScaler } from '../../src/provider/scaler.ts';
import { validateServiceDescription } from '../../src/protocol/service.ts';
import { ECHO_TEST_SERVICE } from './fixtures/fake-host.ts';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openRegistry } from '../../src/provider/registry/index.ts';

async function until(check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 500 && !(await check()); i++) await new Promise((r) => setTimeout(r, 10));
}

function setup(
  scaling: Record<string, number | string>,
  o: { busy?: boolean; deployFails?: boolean; queued?: number; traffic?: Parameters<typeof createScaler>[0]['traffic']; suspend?: (ep: RouteEndpoint, keep: number) => Promise<void>; fork?: (ep: RouteEndpoint) => Promise<void> } = {},
) {
  let now = 1_000_000;
  const tracker = createInFlightTracker();
  const table = createRoutingTable({ tracker });
  table.putService(validateServiceDescription({ ...ECHO_TEST_SERVICE, scaling }));
  const deploys: Array<{ service: string; count: number | undefined; reason: string | undefined }> = [];
  const undeploys: string[] = [];
  const logged: string[] = [];
  const scaler = createScaler({
    table,
    tracker,
    activator: { queued: () => o.queued ?? 0 },
    deployer: {
      deploy: async (service, d) => {
        deploys.push({ service, count: d.count, reason: d.reason });
        if (o.deployFails) throw new Error('no host can run it');
        return { ready: [], deployments: [], errors: [] };
      },
      undeploy: async (ep, reason) => {
        undeploys.push(`${ep.id}:${reason}`);
        table.remove(ep.id, reason);
      },
    },
    busy: () => o.busy ?? false,
    ownedBy: (ep) => ep.deployedBy !== 'other-provider',
    log: { info: (_o, m) => logged.push(`info ${m}`), warn: (_o, m) => logged.push(`warn ${m}`), error: (_o, m) => logged.push(`error ${m}`) },
    stableWindowMs: 1000,
    now: () => now,
    trafficReportMs: 0,
    ...(o.traffic === undefined ? {} : { traffic: o.traffic }),
    ...(o.suspend === undefined ? {} : { suspend: o.suspend }),
    ...(o.fork === undefined ? {} : { fork: o.fork }),
  });
  const add = (id: string, readyAt: number, deployedBy = 'me') =>
    table.add({ id, service: 'echo', version: '1', deploymentId: `d-${id}`, hostId: 'h1', readyAt, deployedBy } as unknown as RouteEndpoint);
  return { table, tracker, scaler, deploys, undeploys, logged, add, advance: (ms: number) => (now += ms), now: () => now };
}

test('in-flight messages past the target add instances in one deploy call', async () => {
  const s = setup({ targetConcurrency: 2, max: 4, idleTimeoutMs: 60_000 });
  s.add('e1', s.now());
  s.table.touch('echo', s.now());
  for (let i = 0; i < 6; i++) s.tracker.acquire('e1');
  await s.scaler.tick();
  await s.scaler.close();
  assert.deepEqual(s.deploys, [{ service: 'echo', count: 2, reason: 'scale' }]);
  assert.deepEqual(s.undeploys, []);
});

test('messages waiting in the activator count as load: a cold service with a queue past the target scales up', async () => {
  const s = setup({ targetConcurrency: 2, max: 4, idleTimeoutMs: 60_000 }, { queued: 5 });
  s.table.touch('echo', s.now());
  await s.scaler.tick();
  await s.scaler.close();
  assert.deepEqual(s.deploys, [{ service: 'echo', count: 3, reason: 'scale' }]);
});

test('no scale-up while a deployment of the service is under way', async () => {
  const s = setup({ targetConcurrency: 1, max: 4, idleTimeoutMs: 60_000 }, { busy: true });
  s.add('e1', s.now());
  for (let i = 0; i < 4; i++) s.tracker.acquire('e1');
  await s.scaler.tick();
  await s.scaler.close();
  assert.deepEqual(s.deploys, []);
});

test('idle past the timeout: down to zero, only the instances this provider deployed', async () => {
  const s = setup({ idleTimeoutMs: 5000 });
  s.add('mine-1', s.now());
  s.add('mine-2', s.now());
  s.add('theirs', s.now(), 'other-provider');
  s.table.touch('echo', s.now());
  await s.scaler.tick();
  assert.deepEqual(s.undeploys, [], 'not idle yet');
  s.advance(5001);
  await s.scaler.tick();
  await s.scaler.close();
  assert.deepEqual(s.undeploys.sort(), ['mine-1:scaled-down', 'mine-2:scaled-down']);
  assert.deepEqual(s.table.endpoints('echo').map((e) => e.id), ['theirs']);
  assert.ok(s.logged.includes('info scaling to zero'));
});

test('scaling down under a lighter load takes the least busy instance first', async () => {
  const s = setup({ targetConcurrency: 2, max: 4, idleTimeoutMs: 600_000 });
  s.add('busy', s.now() - 10);
  s.add('quiet', s.now() - 5);
  s.add('idle', s.now());
  s.tracker.acquire('busy');
  s.tracker.acquire('busy');
  s.tracker.acquire('quiet');
  // Load 3 at target 2 wants 2 instances; the stable window must pass before scaling down.
  for (let i = 0; i < 3; i++) {
    s.table.touch('echo', s.now());
    await s.scaler.tick();
    s.advance(600);
  }
  await s.scaler.close();
  assert.deepEqual(s.undeploys, ['idle:scaled-down']);
});

test('a failed scale-up is logged and the loop carries on', async () => {
  const s = setup({ targetConcurrency: 1, max: 4, idleTimeoutMs: 60_000 }, { deployFails: true });
  s.add('e1', s.now());
  s.tracker.acquire('e1');
  s.tracker.acquire('e1');
  await s.scaler.tick();
  await s.scaler.close();
  assert.equal(s.deploys.length, 1);
  assert.ok(s.logged.includes('warn scaling up failed'));
});

test('overlapping ticks run one pass', async () => {
  const s = setup({ targetConcurrency: 1, max: 4, idleTimeoutMs: 60_000 });
  s.add('e1', s.now());
  s.tracker.acquire('e1');
  s.tracker.acquire('e1');
  const a = s.scaler.tick();
  const b = s.scaler.tick();
  assert.equal(a, b);
  await a;
  await s.scaler.close();
  assert.equal(s.deploys.length, 1);
});

test('two providers on one registry: the one that deployed does not scale to zero an instance the other still sends messages to', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-scaler-traffic-'));
  const registry = await openRegistry({ sqlitePath: join(dir, 'r.db') });
  t.after(async () => {
    await registry.close();
    await rm(dir, { recursive: true, force: true });
  });
  const traffic = (providerId: string) => ({ record: (r: Parameters<typeof registry.recordTraffic>[1]) => registry.recordTraffic(providerId, r), last: (ids: readonly string[]) => registry.lastTraffic(ids) });
  const a = setup({ idleTimeoutMs: 60_000 }, { traffic: traffic('a') });
  const b = setup({ idleTimeoutMs: 60_000 }, { traffic: traffic('b') });
  a.add('e1', a.now());
  b.add('e1', b.now(), 'a'); // b routes to the instance a deployed
  // Two minutes: a sees no message at all, b sends one every 30 s (its clock is the same).
  for (let i = 0; i < 4; i++) {
    a.advance(30_000);
    b.advance(30_000);
    b.table.touch('echo', b.now());
    await b.scaler.tick();
    await until(async () => (await registry.lastTraffic(['e1'])).get('e1') === b.now()); // b's report is written in the background
    await a.scaler.tick();
  }
  assert.deepEqual(a.undeploys, [], "a keeps the instance: b's messages count");
  assert.ok(a.logged.every((l) => !l.includes('scaling to zero')));
  // b stops sending: after the idle timeout a scales it to zero.
  a.advance(61_000);
  await a.scaler.tick();
  await a.scaler.close();
  await b.scaler.close();
  assert.deepEqual(a.undeploys, ['e1:scaled-down']);
});

test("idle: 'suspend' saves the last instance instead of stopping it; a driver that cannot is stopped instead, and says why", async () => {
  const suspended: string[] = [];
  const s = setup({ idleTimeoutMs: 1000, idle: 'suspend', keepStateMs: 5000 }, { suspend: async (ep, keep) => void suspended.push(`${ep.id} keep ${keep}`) });
  s.add('e1', s.now());
  s.advance(5000);
  await s.scaler.tick();
  await s.scaler.close();
  assert.deepEqual(suspended, ['e1 keep 5000']);
  assert.deepEqual(s.undeploys, []);

  const f = setup({ idleTimeoutMs: 1000, idle: 'suspend' }, { suspend: async () => Promise.reject(new Error('instance e2 runs on driver runc, which cannot snapshot')) });
  f.add('e2', f.now());
  f.advance(5000);
  await f.scaler.tick();
  await f.scaler.close();
  assert.deepEqual(f.undeploys, ['e2:scaled-down']);
  assert.ok(f.logged.includes('warn suspending an idle instance failed; stopping it instead'));
});

test('scaling out copies a warm instance where its driver can fork; where it cannot, the rest come from the image', async () => {
  const forks: string[] = [];
  const s = setup({ targetConcurrency: 2, max: 4, idleTimeoutMs: 60_000 }, { fork: async (ep) => void forks.push(ep.id) });
  s.add('e1', s.now());
  s.table.touch('echo', s.now());
  for (let i = 0; i < 6; i++) s.tracker.acquire('e1');
  await s.scaler.tick();
  await s.scaler.close();
  assert.deepEqual(forks, ['e1', 'e1'], 'two copies of the warm instance');
  assert.deepEqual(s.deploys, [], 'no cold start');

  let tries = 0;
  const f = setup({ targetConcurrency: 2, max: 4, idleTimeoutMs: 60_000 }, { fork: async () => Promise.reject(new Error(`instance e1 runs on driver runc, which cannot fork (${++tries})`)) });
  f.add('e1', f.now());
  f.table.touch('echo', f.now());
  for (let i = 0; i < 6; i++) f.tracker.acquire('e1');
  await f.scaler.tick();
  await f.scaler.close();
  assert.equal(tries, 1, 'asked once, then the image');
  assert.deepEqual(f.deploys, [{ service: 'echo', count: 2, reason: 'scale' }]);
});
