import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  cacheAffinity,
  effectivePolicy,
  feasibleHosts,
  hostList,
  leastLoaded,
  missingCapabilities,
  place,
  placementPolicies,
  spread,
  type DriverCapabilities,
  type HostDriverView,
  type HostView,
  type PlacementDecision,
  type PlacementPolicy,
  type PlacementRequest,
  type PlacementSpec,
} from '../../../src/provider/placement/index.ts';

const namespaces: DriverCapabilities = {
  isolation: 'namespaces',
  canPause: true,
  canSnapshot: true,
  canMigrate: false,
  canClone: false,
  enforcesLimits: true,
};
const none: DriverCapabilities = {
  isolation: 'none',
  canPause: false,
  canSnapshot: false,
  canMigrate: false,
  canClone: false,
  enforcesLimits: false,
};
const drv = (key: string, capabilities: DriverCapabilities, extra: Partial<HostDriverView> = {}): HostDriverView => ({
  key,
  isDefault: true,
  healthy: true,
  capabilities,
  ...extra,
});

interface HostOverrides extends Partial<Omit<HostView, 'free' | 'load'>> {
  free?: Partial<HostView['free']>;
  load?: Partial<HostView['load']>;
  cached?: string[];
}

/** A host with 8 GB, 4 cores and 10 slots, all free, idle, one healthy namespaces driver. */
function host(id: string, o: HostOverrides = {}): HostView {
  const { free, load, cached, ...rest } = o;
  return {
    id,
    state: 'alive',
    labels: {},
    capacity: { memoryMb: 8192, cpuMillis: 4000, instances: 10 },
    drivers: [drv('d0', namespaces)],
    replicas: 0,
    cachedLayers: new Set(cached ?? []),
    ...rest,
    free: { memoryMb: 8192, cpuMillis: 4000, instances: 10, ...free },
    load: { instances: 0, inFlight: 0, ...load },
  };
}

const L1 = { digest: 'sha256:' + '1'.repeat(64), size: 50_000_000 };
const L2 = { digest: 'sha256:' + '2'.repeat(64), size: 5_000_000 };
const L3 = { digest: 'sha256:' + '3'.repeat(64), size: 4_000_000 };

function req(placement: PlacementSpec = {}, more: Partial<PlacementRequest> = {}): PlacementRequest {
  return { service: 'echo', resources: { memoryMb: 256, cpuMillis: 500 }, layers: [L1, L2, L3], placement, ...more };
}

const chosen = (d: PlacementDecision) => (d.ok ? d.host : `no-host`);

test('the feasibility filter refuses each unfit host with a reason', () => {
  const cases: Array<{ name: string; host: HostView; request?: PlacementRequest; reason: RegExp | undefined }> = [
    { name: 'alive and roomy', host: host('h'), reason: undefined },
    { name: 'suspect', host: host('h', { state: 'suspect' }), reason: /suspect/ },
    { name: 'dead', host: host('h', { state: 'dead' }), reason: /^dead$/ },
    { name: 'excluded', host: host('h'), request: req({}, { exclude: ['h'] }), reason: /excluded/ },
    { name: 'not in the host list', host: host('h'), request: req({ hosts: ['other'] }), reason: /host list/ },
    { name: 'label missing', host: host('h'), request: req({ labels: { zone: 'eu' } }), reason: /zone=eu wanted, host has no zone/ },
    {
      name: 'label differs',
      host: host('h', { labels: { zone: 'us' } }),
      request: req({ labels: { zone: 'eu' } }),
      reason: /zone=eu wanted, host has zone=us/,
    },
    { name: 'labels match', host: host('h', { labels: { zone: 'eu', gpu: 'no' } }), request: req({ labels: { zone: 'eu' } }), reason: undefined },
    { name: 'memory short', host: host('h', { free: { memoryMb: 100 } }), reason: /needs 256 MB memory, 100 MB free/ },
    { name: 'cpu short', host: host('h', { free: { cpuMillis: 499 } }), reason: /needs 500 CPU millis, 499 free/ },
    { name: 'exactly enough', host: host('h', { free: { memoryMb: 256, cpuMillis: 500, instances: 1 } }), reason: undefined },
    { name: 'no slot', host: host('h', { free: { instances: 0 } }), reason: /no instance slot free \(10 max\)/ },
    { name: 'no driver', host: host('h', { drivers: [] }), reason: /reports no driver/ },
    { name: 'unhealthy driver', host: host('h', { drivers: [drv('d', namespaces, { healthy: false })] }), reason: /no healthy driver$/ },
    {
      name: 'capability missing',
      host: host('h', { drivers: [drv('d', none)] }),
      request: req({ capabilities: { canSnapshot: true } }),
      reason: /no healthy driver with canSnapshot/,
    },
    {
      name: 'isolation not accepted',
      host: host('h', { drivers: [drv('d', none)] }),
      request: req({ capabilities: { isolation: ['namespaces', 'vm'] } }),
      reason: /isolation namespaces\|vm/,
    },
    {
      name: 'capable driver is unhealthy',
      host: host('h', { drivers: [drv('a', none), drv('b', namespaces, { healthy: false, isDefault: false })] }),
      request: req({ capabilities: { isolation: ['namespaces'] } }),
      reason: /no healthy driver with isolation namespaces/,
    },
  ];
  for (const c of cases) {
    const f = feasibleHosts(c.request ?? req(), [c.host]);
    if (c.reason === undefined) {
      assert.equal(f.candidates.length, 1, `${c.name}: should be feasible, got ${JSON.stringify(f.rejected)}`);
      assert.deepEqual(f.rejected, {});
    } else {
      assert.equal(f.candidates.length, 0, `${c.name}: should be refused`);
      assert.match(f.rejected['h'] ?? '', c.reason, c.name);
    }
  }
});

test('the filter reads capabilities, never driver names, and picks the driver that fits', () => {
  // A driver keyed 'runc' that cannot snapshot is refused; one keyed 'odd' that can is taken.
  const misnamed = host('h1', { drivers: [drv('runc', { ...namespaces, canSnapshot: false })] });
  const odd = host('h2', { drivers: [drv('odd', namespaces)] });
  const f = feasibleHosts(req({ capabilities: { canSnapshot: true } }), [misnamed, odd]);
  assert.deepEqual(f.candidates.map((c) => [c.host.id, c.driver]), [['h2', 'odd']]);
  assert.match(f.rejected['h1'] ?? '', /canSnapshot/);

  const cases: Array<{ name: string; drivers: HostDriverView[]; spec: PlacementSpec; want: string }> = [
    {
      name: 'no requirement: the default driver',
      drivers: [drv('p', none), drv('r', namespaces, { isDefault: false })],
      spec: {},
      want: 'p',
    },
    {
      name: 'requirement only a non-default driver meets',
      drivers: [drv('p', none), drv('r', namespaces, { isDefault: false })],
      spec: { capabilities: { isolation: ['namespaces'], enforcesLimits: true } },
      want: 'r',
    },
    {
      name: 'default unhealthy: another healthy one',
      drivers: [drv('p', none, { healthy: false }), drv('r', namespaces, { isDefault: false })],
      spec: {},
      want: 'r',
    },
    {
      name: 'several fit: the default among them',
      drivers: [drv('x', namespaces, { isDefault: false }), drv('y', namespaces)],
      spec: { capabilities: { canPause: true } },
      want: 'y',
    },
  ];
  for (const c of cases) {
    const got = feasibleHosts(req(c.spec), [host('h', { drivers: c.drivers })]).candidates[0]?.driver;
    assert.equal(got, c.want, c.name);
  }
});

test('missingCapabilities lists exactly what a driver lacks', () => {
  assert.deepEqual(missingCapabilities(none, undefined), []);
  assert.deepEqual(missingCapabilities(none, {}), []);
  assert.deepEqual(missingCapabilities(none, { canPause: false, isolation: [] }), [], 'false and [] require nothing');
  assert.deepEqual(missingCapabilities(none, { isolation: ['vm'], canClone: true, canMigrate: true }), [
    'isolation vm',
    'canMigrate',
    'canClone',
  ]);
  assert.deepEqual(missingCapabilities(namespaces, { isolation: ['namespaces'], canSnapshot: true, enforcesLimits: true }), []);
  assert.deepEqual(missingCapabilities(namespaces, { isolation: 'namespaces' }), [], 'one mode may be given bare');
  assert.deepEqual(missingCapabilities(none, { isolation: 'vm' }), ['isolation vm']);
});

test('listed hosts with no report are named in the reasons', () => {
  const f = feasibleHosts(req({ hosts: ['a', 'ghost'] }), [host('a')]);
  assert.deepEqual(f.candidates.map((c) => c.host.id), ['a']);
  assert.deepEqual(f.rejected, { ghost: 'unknown host: no report from it' });
});

test('leastLoaded: most capacity left after placing, then fewest in flight, then fewest instances', () => {
  const cases: Array<{ name: string; hosts: HostView[]; rand?: () => number; want: string }> = [
    { name: 'more free memory', hosts: [host('a', { free: { memoryMb: 2000 } }), host('b', { free: { memoryMb: 6000 } })], want: 'b' },
    {
      name: 'the scarcest dimension counts: plenty of memory but little CPU loses',
      hosts: [host('a', { free: { memoryMb: 8000, cpuMillis: 1000 } }), host('b', { free: { memoryMb: 5000, cpuMillis: 4000 } })],
      want: 'b',
    },
    {
      name: 'equally free: fewer in flight',
      hosts: [host('a', { load: { inFlight: 9 } }), host('b', { load: { inFlight: 2 } }), host('c', { load: { inFlight: 5 } })],
      want: 'b',
    },
    {
      name: 'free share within the same percent counts as equal',
      hosts: [host('a', { free: { memoryMb: 2000 }, load: { inFlight: 3 } }), host('b', { free: { memoryMb: 1990 }, load: { inFlight: 0 } })],
      want: 'b',
    },
    {
      name: 'then fewer instances',
      hosts: [host('a', { load: { instances: 4 } }), host('b', { load: { instances: 1 } })],
      want: 'b',
    },
    { name: 'exact tie without rand: lowest id', hosts: [host('c'), host('a'), host('b')], want: 'a' },
    { name: 'exact tie with rand: rand picks among the tied', hosts: [host('c'), host('a'), host('b'), host('z', { load: { inFlight: 1 } })], rand: () => 0.99, want: 'c' },
    { name: 'the freest host is dead', hosts: [host('a', { state: 'dead' }), host('b', { free: { memoryMb: 1000 } })], want: 'b' },
    { name: 'nothing fits', hosts: [host('a', { free: { memoryMb: 10 } })], want: 'no-host' },
  ];
  for (const c of cases) assert.equal(chosen(leastLoaded(req(), c.hosts, c.rand)), c.want, c.name);

  const d = leastLoaded(req(), [host('a', { free: { memoryMb: 4352 } }), host('b', { state: 'dead' })]);
  assert.ok(d.ok);
  assert.equal(d.driver, 'd0');
  assert.equal(d.score, 0.5, '(4352 - 256) / 8192 = 50% free after placing');
  assert.match(d.reason, /least loaded: 50% free after placing, 0 in flight/);
  assert.deepEqual(d.rejected, { b: 'dead' });
});

test('no host: every host has its reason and the message names them all', () => {
  const d = place(req({ labels: { zone: 'eu' } }), [host('a', { state: 'dead' }), host('b'), host('c', { labels: { zone: 'eu' }, free: { memoryMb: 1 } })]);
  assert.equal(d.ok, false);
  if (d.ok) return;
  assert.equal(d.code, 'no-host');
  assert.deepEqual(Object.keys(d.reasons).sort(), ['a', 'b', 'c']);
  assert.match(d.message, /^no host can run 'echo': a: dead; b: label zone=eu wanted, host has no zone; c: needs 256 MB memory, 1 MB free$/);
  const empty = place(req(), []);
  assert.ok(!empty.ok && /no host has reported/.test(empty.message));
});

test('cacheAffinity: most bytes of the image already cached, ties to the least loaded', () => {
  const cases: Array<{ name: string; hosts: HostView[]; want: string; score?: number }> = [
    {
      name: 'the host with the layers wins even when busier',
      hosts: [host('a', { load: { inFlight: 0 } }), host('b', { cached: [L1.digest], load: { inFlight: 30 } })],
      want: 'b',
      score: 0.847,
    },
    {
      name: 'bytes, not layer count: one big layer beats two small',
      hosts: [host('a', { cached: [L2.digest, L3.digest] }), host('b', { cached: [L1.digest] })],
      want: 'b',
    },
    { name: 'all cached', hosts: [host('a', { cached: [L1.digest] }), host('b', { cached: [L1.digest, L2.digest, L3.digest] })], want: 'b', score: 1 },
    { name: 'nothing cached anywhere: least loaded', hosts: [host('a', { load: { inFlight: 4 } }), host('b', { load: { inFlight: 1 } })], want: 'b', score: 0 },
    {
      name: 'same bytes cached: least loaded',
      hosts: [host('a', { cached: [L1.digest], free: { memoryMb: 1000 } }), host('b', { cached: [L1.digest] })],
      want: 'b',
    },
    { name: 'the caching host is refused', hosts: [host('a'), host('b', { cached: [L1.digest], state: 'suspect' })], want: 'a' },
    { name: 'unrelated cached layers do not count', hosts: [host('a', { cached: ['sha256:' + 'f'.repeat(64)], load: { inFlight: 2 } }), host('b')], want: 'b' },
  ];
  for (const c of cases) {
    const d = cacheAffinity(req(), c.hosts);
    assert.equal(chosen(d), c.want, c.name);
    if (c.score !== undefined && d.ok) assert.equal(d.score, c.score, `${c.name}: score`);
  }
  const d = cacheAffinity(req(), [host('b', { cached: [L1.digest] })]);
  assert.ok(d.ok && /50 MB of 59 MB of the image cached here/.test(d.reason), d.ok ? d.reason : d.message);
});

test('hostList: the first feasible host in the list order', () => {
  const all = [host('a'), host('b'), host('c')];
  const cases: Array<{ name: string; list: string[]; hosts: HostView[]; want: string; score?: number }> = [
    { name: 'first choice', list: ['c', 'a'], hosts: all, want: 'c', score: 1 },
    { name: 'first refused: the next', list: ['c', 'a', 'b'], hosts: [host('a'), host('b'), host('c', { state: 'dead' })], want: 'a', score: 0.5 },
    { name: 'unknown first: the next', list: ['ghost', 'b'], hosts: all, want: 'b' },
    { name: 'load does not matter', list: ['a', 'b'], hosts: [host('a', { load: { inFlight: 99 } }), host('b')], want: 'a' },
    { name: 'all listed refused', list: ['a'], hosts: [host('a', { free: { instances: 0 } }), host('b')], want: 'no-host' },
    { name: 'empty list', list: [], hosts: all, want: 'no-host' },
  ];
  for (const c of cases) {
    const d = hostList(req({ policy: 'host-list', hosts: c.list }), c.hosts);
    assert.equal(chosen(d), c.want, c.name);
    if (c.score !== undefined && d.ok) assert.equal(d.score, c.score, `${c.name}: score`);
  }
  const refused = hostList(req({ policy: 'host-list', hosts: ['a'] }), [host('a', { free: { instances: 0 } }), host('b')]);
  assert.ok(!refused.ok);
  assert.deepEqual(refused.reasons, { a: 'no instance slot free (10 max)', b: 'not in the placement host list' });
  const empty = hostList(req({ policy: 'host-list' }), all);
  assert.ok(!empty.ok && /names no hosts/.test(empty.reasons['a'] ?? ''));
});

test('spread: fewest replicas of this service, ties to the least loaded', () => {
  const cases: Array<{ name: string; hosts: HostView[]; want: string }> = [
    { name: 'fewest replicas', hosts: [host('a', { replicas: 2 }), host('b', { replicas: 0, load: { inFlight: 50 } }), host('c', { replicas: 1 })], want: 'b' },
    { name: 'tie: least loaded', hosts: [host('a', { replicas: 1, load: { inFlight: 5 } }), host('b', { replicas: 1, load: { inFlight: 1 } })], want: 'b' },
    { name: 'the emptiest host is excluded', hosts: [host('a', { replicas: 0 }), host('b', { replicas: 3 })], want: 'b' },
  ];
  for (const c of cases) {
    const exclude = c.name.includes('excluded') ? ['a'] : [];
    assert.equal(chosen(spread(req({}, { exclude }), c.hosts)), c.want, c.name);
  }
  // Placing replicas one after another, updating the views, spreads them evenly.
  const hosts = [host('a'), host('b'), host('c')];
  const placed: string[] = [];
  for (let i = 0; i < 6; i++) {
    const d = spread(req(), hosts);
    assert.ok(d.ok);
    placed.push(d.host);
    const h = hosts.find((x) => x.id === d.host)!;
    h.replicas++;
    h.free.memoryMb -= 256;
    h.free.cpuMillis -= 500;
    h.free.instances--;
  }
  assert.deepEqual(placed.sort(), ['a', 'a', 'b', 'b', 'c', 'c']);
});

test('place() dispatches on the policy, least loaded by default', () => {
  const hosts = [
    host('cached', { cached: [L1.digest], load: { inFlight: 10 }, replicas: 1 }),
    host('idle', { replicas: 3 }),
    host('fresh', { load: { inFlight: 5 } }),
  ];
  const want: Record<PlacementPolicy, string> = {
    'least-loaded': 'idle',
    'cache-affinity': 'cached',
    'host-list': 'fresh',
    spread: 'fresh',
  };
  for (const policy of placementPolicies) {
    assert.equal(chosen(place(req({ policy, hosts: policy === 'host-list' ? ['fresh', 'idle'] : undefined }), hosts)), want[policy], policy);
  }
  assert.equal(chosen(place(req(), hosts)), 'idle');
  assert.equal(chosen(place(req({ hosts: ['fresh', 'idle'] }), hosts)), 'fresh', 'hosts named and no policy: host-list');
  assert.equal(effectivePolicy({}), 'least-loaded');
  assert.equal(effectivePolicy({ hosts: [] }), 'least-loaded');
  assert.equal(effectivePolicy({ hosts: ['a'] }), 'host-list');
  assert.equal(effectivePolicy({ hosts: ['a'], policy: 'spread' }), 'spread');
  assert.throws(
    () => place(req({ policy: 'random' as PlacementPolicy }), hosts),
    (e: unknown) => (e as { code?: string; field?: string }).code === 'invalid' && (e as { field?: string }).field === 'placement.policy',
  );
});

test('policies are pure: the inputs are not changed and the same inputs give the same answer', () => {
  const hosts = [host('a', { cached: [L2.digest] }), host('b', { replicas: 1 }), host('c', { state: 'suspect' })];
  const before = JSON.stringify(hosts, (_, v) => (v instanceof Set ? [...v] : v));
  const request = req({ policy: 'cache-affinity' });
  const first = place(request, hosts);
  for (let i = 0; i < 5; i++) assert.deepEqual(place(request, hosts), first);
  assert.equal(JSON.stringify(hosts, (_, v) => (v instanceof Set ? [...v] : v)), before);
});
