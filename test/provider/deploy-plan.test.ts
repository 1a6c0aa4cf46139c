// From a service and its image to placements and plans, as plain functions: host views
// from reports, several replicas spread over hosts, the refusal when they run out, the
// placement request from a description, and the plan a host is sent.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { choosePlacements, hostViews, placementRequest, planFor, requiredDriver } from '../../src/provider/deploy-plan.ts';
import type { PoolHost } from '../../src/provider/host-pool.ts';
import { compileService, type RouteEndpoint } from '../../src/provider/routing-table.ts';
import type { RemoteImage } from '../../src/image/index.ts';
import type { HostReport } from '../../src/protocol/deployment.ts';
import { validateServiceDescription } from '../../src/protocol/service.ts';
import { ECHO_TEST_SERVICE } from './fixtures/fake-host.ts';

const image: RemoteImage = {
  repository: 'echo',
  manifestDigest: 'sha256:m',
  configDigest: 'sha256:c',
  layers: [{ digest: 'sha256:l1', diffId: 'sha256:d1', size: 100, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' }],
  process: { args: ['/echo'], env: [], cwd: '/', user: undefined },
};

const capabilities = { isolation: 'namespaces', canPause: true, canSnapshot: false, canMigrate: false, canClone: false, enforcesLimits: true };

function poolHost(id: string, o: { instances?: number; layers?: string[]; report?: boolean } = {}): PoolHost {
  const report = {
    hostId: id,
    capacity: { memoryMb: 4096, cpuMillis: 4000, instances: o.instances ?? 8 },
    free: { memoryMb: 4096, cpuMillis: 4000, instances: o.instances ?? 8 },
    load: { instances: 0, inFlight: 0 },
    layers: (o.layers ?? []).map((digest) => ({ digest, size: 1 })),
    drivers: [
      { name: 'runc', default: true, fingerprint: { healthy: true }, capabilities },
      { name: 'process', default: false, fingerprint: { healthy: false }, capabilities: { ...capabilities, isolation: 'none' } },
    ],
  } as unknown as HostReport;
  return { id, state: 'alive', labels: {}, report: o.report === false ? undefined : report } as unknown as PoolHost;
}

const entry = (extra: Record<string, unknown> = {}) => compileService(validateServiceDescription({ ...ECHO_TEST_SERVICE, ...extra }));

test('host views: reports become views, with this service’s replicas per host and the driver filter', () => {
  const eps = [{ hostId: 'a' }, { hostId: 'a' }, { hostId: 'b' }] as RouteEndpoint[];
  const views = hostViews([poolHost('a', { layers: ['sha256:l1'] }), poolHost('b'), poolHost('c', { report: false })], eps, 'runc');
  assert.deepEqual([...views.keys()], ['a', 'b'], 'a host without a report is not placeable');
  assert.equal(views.get('a')!.replicas, 2);
  assert.equal(views.get('b')!.replicas, 1);
  assert.ok(views.get('a')!.cachedLayers.has('sha256:l1'));
  assert.deepEqual(views.get('a')!.drivers.map((d) => d.key), ['runc']);
  const all = hostViews([poolHost('a')], [], undefined);
  assert.deepEqual(all.get('a')!.drivers.map((d) => [d.key, d.healthy]), [['runc', true], ['process', false]]);
});

test('several replicas at once are spread over distinct hosts; past the free slots the rest is refused with the reason', () => {
  const views = hostViews([poolHost('a', { instances: 1 }), poolHost('b', { instances: 1 }), poolHost('c', { instances: 1 })], [], undefined);
  const three = choosePlacements(entry(), image, 3, [], new Map(views), () => 0);
  assert.deepEqual(three.picks.map((p) => p.host).sort(), ['a', 'b', 'c']);
  assert.equal(three.refusal, undefined);
  const five = choosePlacements(entry(), image, 5, [], new Map(views), () => 0);
  assert.equal(five.picks.length, 3);
  assert.match(five.refusal ?? '', /no host can run 'echo'/);
  const excluded = choosePlacements(entry(), image, 1, ['a', 'b'], new Map(views), () => 0);
  assert.deepEqual(excluded.picks.map((p) => p.host), ['c']);
});

test('the placement request carries resources, layers, the policy (host-list when hosts are named) and required capabilities', () => {
  const req = placementRequest(entry({ placement: { hosts: ['a'], requires: { isolation: 'namespaces', canPause: true } } }), image, ['x']);
  assert.deepEqual(req.resources, { memoryMb: 128, cpuMillis: 500 });
  assert.deepEqual(req.layers, [{ digest: 'sha256:l1', size: 100 }]);
  assert.equal(req.placement.policy, 'host-list');
  assert.deepEqual(req.placement.hosts, ['a']);
  assert.deepEqual(req.placement.capabilities, { isolation: ['namespaces'], canPause: true });
  assert.deepEqual(req.exclude, ['x']);
  assert.equal(placementRequest(entry(), image, []).placement.policy, undefined);
});

test('the plan pins the image by digest and carries the store, readiness and imports (only when there are some)', () => {
  const plan = planFor(entry(), image, 'runc', 'http://store', 5000, undefined);
  assert.equal(plan.image, 'echo@sha256:m');
  assert.equal(plan.store, 'http://store');
  assert.equal(plan.driver, 'runc');
  assert.deepEqual(plan.readiness, { timeoutMs: 5000 });
  assert.equal('imports' in plan, false);
  assert.equal('imports' in planFor(entry(), image, 'runc', 'http://store', 5000, []), false);
  const imports = [{ name: 'db', url: 'http://127.0.0.1:1/x/f/i/db' }] as unknown as NonNullable<ReturnType<typeof planFor>['imports']>;
  assert.deepEqual(planFor(entry(), image, 'runc', 'http://store', 5000, imports).imports, imports);
});

test('a service on TCP $PORT: the plan carries listen and the readiness path, and only drivers that serve a port are placed', () => {
  const web = entry({ listen: { port: 8080 }, readiness: { path: '/ready' } });
  const plan = planFor(web, image, 'runc', 'http://store', 5000, undefined);
  assert.deepEqual(plan.listen, { port: 8080 });
  assert.deepEqual(plan.readiness, { timeoutMs: 5000, path: '/ready' });
  assert.equal('listen' in planFor(entry(), image, 'runc', 'http://store', 5000, undefined), false);
  assert.deepEqual(placementRequest(web, image, []).placement.capabilities, { servesPort: true });
  // The hosts here report drivers without servesPort (as a host of an older version would).
  const refused = choosePlacements(web, image, 1, [], hostViews([poolHost('a')], [], undefined), () => 0);
  assert.equal(refused.picks.length, 0);
  assert.match(refused.refusal ?? '', /servesPort/);
});

test('a component image needs its own driver: placed only where a host offers it, refused with the driver named otherwise', () => {
  const component: RemoteImage = { ...image, driver: 'isolate' };
  assert.equal(requiredDriver(entry(), component), 'isolate', 'the image label decides when the service names no driver');
  assert.equal(requiredDriver(entry({ driver: 'isolate' }), component), 'isolate');
  assert.equal(requiredDriver(entry({ driver: 'runc' }), image), 'runc', 'an ordinary image: the service’s driver');
  assert.throws(() => requiredDriver(entry({ driver: 'runc' }), component), (e: { code?: string; message: string }) => e.code === 'invalid' && /isolate component/.test(e.message));
  // No host offers isolate: the refusal names it.
  const none = choosePlacements(entry(), component, 1, [], hostViews([poolHost('a')], [], 'isolate'), () => 0);
  assert.deepEqual(none.picks, []);
  assert.match(none.refusal ?? '', /isolate component: no host in the pool offers the isolate driver/);
  // A host that offers it is picked, with that driver.
  const withIsolate = poolHost('b');
  (withIsolate.report as unknown as { drivers: unknown[] }).drivers.push({ name: 'isolate', default: false, fingerprint: { healthy: true }, capabilities: { ...capabilities, isolation: 'isolate' } });
  const one = choosePlacements(entry(), component, 1, [], hostViews([poolHost('a'), withIsolate], [], 'isolate'), () => 0);
  assert.deepEqual(one.picks.map((p) => [p.host, p.driver]), [['b', 'isolate']]);
  // An ordinary image is never given to a component driver.
  assert.deepEqual(hostViews([withIsolate], [], undefined).get('b')!.drivers.map((d) => d.key), ['runc', 'process']);
});
