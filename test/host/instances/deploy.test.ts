import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDeploy, createTimeline, driverFor, type DeployDeps } from '../../../src/host/instances/deploy.ts';
import { createAdmission } from '../../../src/host/admission.ts';
import { createEventBus } from '../../../src/host/events.ts';
import { createEndpoints } from '../../../src/host/instances/endpoints.ts';
import { createInstanceStore, newRecord, type LiveInstance } from '../../../src/host/instances/instance-store.ts';
import type { InstanceSpec } from '../../../src/host/drivers/driver.ts';
import type { PreparedRoot } from '../../../src/host/layer-cache.ts';
import type { WarmContainer } from '../../../src/host/instances/warm-containers.ts';
import type { PhaseName } from '../../../src/protocol/deployment.ts';
import type { RootfsSpec } from '../../../src/protocol/oci.ts';
import { fakeDriver, fakeRunning, memoryState, plan, recordingLogger } from '../fixtures/fakes.ts';

const rootfs: RootfsSpec = { manifestDigest: 'sha256:mm', configDigest: 'sha256:cc', layers: [{ digest: 'sha256:l1', diffId: 'sha256:d1', size: 1, mediaType: 'x' }], process: { args: ['/a'], env: [], cwd: '/', user: undefined } };
const lease: PreparedRoot = { lowerDirs: [], flatDir: undefined, stats: { bytes: 10, layersFetched: 1, layersCached: 0 }, timings: { pull: undefined, unpack: undefined }, release() {} };

test('a timeline records phases relative to its start and reports each duration', () => {
  const seen: Array<[PhaseName, number]> = [];
  const t = createTimeline((name, ms) => seen.push([name, ms]), 1000);
  t.add('admit', 1000, 1000.5);
  t.add('pull', 1000.5, 1012.345);
  assert.deepEqual(t.phases, [
    { name: 'admit', startMs: 0, endMs: 0.5 },
    { name: 'pull', startMs: 0.5, endMs: 12.35 },
  ]);
  assert.equal(seen.length, 2);
  assert.equal(t.rel(1100), 100);
});

test('a driver the host lacks is unsupported, naming the ones it has', () => {
  assert.throws(() => driverFor({ runc: fakeDriver() }, 'process'), (e: any) => e.code === 'unsupported' && e.field === 'driver' && /available: runc/.test(e.message));
});

/** Deploy deps over a temp dir; the fake driver serves /healthz on the instance socket unless told to exit. */
async function setup(t: { after(fn: () => Promise<void>): void }, o: { exitAtStart?: boolean; warm?: (l: LiveInstance) => WarmContainer | undefined } = {}) {
  const base = await mkdtemp(join(tmpdir(), 'shoal-dep-'));
  const servers: Server[] = [];
  t.after(async () => {
    for (const s of servers) await new Promise<void>((r) => s.close(() => r()));
    await rm(base, { recursive: true, force: true });
  });
  const state = memoryState();
  const memPaths = state.paths;
  state.paths = (id) => Object.fromEntries(Object.entries(memPaths(id)).map(([k, v]) => [k, v.replace('/nonexistent', base)])) as any;
  const store = createInstanceStore({ state });
  const driver = fakeDriver('runc');
  driver.start = async (spec: InstanceSpec) => {
    const running = fakeRunning(spec.id);
    if (o.exitAtStart) {
      await writeFile(spec.logFile, 'boom: no config\n');
      running.exit({ reason: 'exited', code: 2 });
      return running;
    }
    const server = createServer((_q, s) => s.end('ok'));
    servers.push(server);
    await new Promise<void>((r) => server.listen(spec.listenSocket, r));
    return running;
  };
  const admission = createAdmission({ memoryMb: 128, cpuMillis: 1000, instances: 2 });
  const events = createEventBus();
  const torn: string[] = [];
  const refills: string[] = [];
  const phases: string[] = [];
  const deps: DeployDeps = {
    drivers: { runc: driver },
    defaultDriver: 'runc',
    admission,
    images: { resolve: async () => ({ rootfs, fetchBlob: async () => {} }) },
    store,
    state,
    endpoints: createEndpoints({ routeKeys: [new Uint8Array(32).fill(3)], dataUrl: () => 'http://h:1' }),
    prepareRoot: async (l, _r, _f, onPulled) => {
      const p = l.paths;
      for (const d of [p.socketDir, p.stateDir]) await mkdir(d, { recursive: true });
      l.lease = lease;
      onPulled?.(lease);
      return { spec: { id: l.record.id, listenSocket: p.socketPath, logFile: p.logFile } as InstanceSpec, user: { uid: 1, gid: 1 }, mountStart: performance.now(), mountEnd: performance.now() };
    },
    warm: { take: () => undefined, refill: (_d, p) => void refills.push(p.service.name) },
    openImportSockets: async () => ({ close() {} }),
    teardown: async (l) => {
      torn.push(l.record.id);
      if (l.reservation) admission.release(l.reservation);
    },
    watchExit: (l, running) => void running.exited.then((e) => (l.exit = e)),
    events,
    log: recordingLogger(),
    isClosing: () => false,
    onPhase: (name) => void phases.push(name),
  };
  if (o.warm) {
    const make = o.warm;
    deps.warm = { ...deps.warm, take: () => make(store.entry(newRecord('echo-warm1', plan(), 'runc', 1), driver)) };
  }
  return { deps, store, state, admission, events, torn, refills, phases, driver };
}

test('a cold deployment runs every phase, is ready, saved, told, and refills the warm pool', async (t) => {
  const s = await setup(t);
  const r = await createDeploy(s.deps)(plan());
  assert.deepEqual(r.timeline.phases.map((p) => p.name), ['admit', 'pull', 'unpack', 'mount', 'create', 'start', 'ready']);
  assert.deepEqual(s.phases, ['admit', 'pull', 'unpack', 'mount', 'create', 'start', 'ready']);
  assert.deepEqual(r.timeline.pull, lease.stats);
  assert.equal(r.instance.state, 'ready');
  assert.equal(s.store.resolve(r.endpoint.instance)?.state, 'ready');
  assert.equal(s.state.records.get(r.endpoint.instance)?.state, 'ready');
  assert.deepEqual(s.events.since(0).map((e) => e.type), ['started', 'ready']);
  assert.deepEqual(s.refills, ['echo']);
  assert.equal(s.admission.reserved().instances, 1);
});

test('a warm container takes over the deployment: its id, a reservation of its own, no pull', async (t) => {
  let warmLive: LiveInstance | undefined;
  const s = await setup(t, {
    warm: (l) => {
      warmLive = l;
      return { live: l, spec: { id: l.record.id, listenSocket: l.paths.socketPath, logFile: l.paths.logFile } as InstanceSpec, user: { uid: 1, gid: 1 } };
    },
  });
  await mkdir(s.state.paths('echo-warm1').socketDir, { recursive: true });
  const r = await createDeploy(s.deps)(plan({ env: { A: '1' } }));
  assert.equal(r.endpoint.instance, 'echo-warm1');
  assert.deepEqual(r.timeline.pull, { bytes: 0, layersFetched: 0, layersCached: 1 });
  assert.deepEqual(r.timeline.phases.map((p) => p.name), ['admit', 'pull', 'unpack', 'mount', 'create', 'start', 'ready']);
  assert.deepEqual(warmLive?.record.plan.env, { A: '1' }, 'the plan is the deployment\'s');
  assert.deepEqual(s.store.all().map((l) => l.record.id), ['echo-warm1'], 'the first id is gone');
  assert.equal(s.admission.reserved().instances, 1);
  assert.equal(warmLive?.reservation?.id, 'echo-warm1');
});

test('an instance that exits before it is ready: unavailable with the log tail, and nothing left', async (t) => {
  const s = await setup(t, { exitAtStart: true });
  await assert.rejects(createDeploy(s.deps)(plan()), (e: any) => {
    assert.equal(e.code, 'unavailable');
    assert.match(e.message, /exited before it was ready \(exited, code 2\)/);
    assert.match(e.detail.log, /boom: no config/);
    return true;
  });
  assert.equal(s.torn.length, 1);
  assert.deepEqual(s.state.removed, s.torn);
  assert.equal(s.store.all().length, 0);
  assert.equal(s.admission.reserved().instances, 0);
});

test('refused by admission: conflict with the reason, nothing registered; a closing host takes no plan', async (t) => {
  const s = await setup(t);
  await assert.rejects(createDeploy(s.deps)(plan({ resources: { memoryMb: 512, cpuMillis: 1, pids: 1 } })), (e: any) => e.code === 'conflict' && /memory/.test(e.detail.reason));
  assert.equal(s.store.all().length, 0);
  await assert.rejects(createDeploy({ ...s.deps, isClosing: () => true })(plan()), (e: any) => e.code === 'unavailable');
});

test('an image the store cannot resolve: its error with an empty log, and the reservation back', async (t) => {
  const s = await setup(t);
  s.deps.images = { resolve: async () => Promise.reject(new Error('manifest unknown')) };
  await assert.rejects(createDeploy(s.deps)(plan()), (e: any) => e.code === 'internal' && /deployment failed: manifest unknown/.test(e.message) && e.detail.log === '');
  assert.equal(s.admission.reserved().instances, 0);
  assert.equal(s.store.all().length, 0);
});

test("a template container serves a first deployment: the service's layers are added before it starts, timed as its mount", async (t) => {
  const order: string[] = [];
  const s = await setup(t);
  s.deps.warm = {
    ...s.deps.warm,
    takeTemplate: async () => {
      const l = s.store.entry(newRecord('pool-1234abcd', plan(), 'runc', 1), s.driver);
      return {
        live: l,
        spec: { id: l.record.id, listenSocket: l.paths.socketPath, logFile: l.paths.logFile } as InstanceSpec,
        user: { uid: 1, gid: 1 },
        attach: async () => void order.push('attach'),
      };
    },
  };
  const start = s.driver.start.bind(s.driver);
  s.driver.start = async (spec) => {
    order.push('start');
    return start(spec);
  };
  await mkdir(s.state.paths('pool-1234abcd').socketDir, { recursive: true });
  const r = await createDeploy(s.deps)(plan({ service: { name: 'fresh', version: '1' } }));
  assert.equal(r.endpoint.instance, 'pool-1234abcd');
  assert.deepEqual(order, ['attach', 'start']);
  assert.deepEqual(r.timeline.phases.map((p) => p.name), ['admit', 'pull', 'unpack', 'mount', 'create', 'start', 'ready']);
  assert.equal(s.state.records.get('pool-1234abcd')?.plan.service.name, 'fresh');
  assert.deepEqual(s.refills, ['fresh']);
});

test('a template container whose layers cannot be added is torn down and the deployment fails', async (t) => {
  const s = await setup(t);
  s.deps.warm = {
    ...s.deps.warm,
    takeTemplate: async () => {
      const l = s.store.entry(newRecord('pool-00000000', plan(), 'runc', 1), s.driver);
      return { live: l, spec: { id: l.record.id } as InstanceSpec, user: { uid: 1, gid: 1 }, attach: async () => Promise.reject(new Error('graft failed')) };
    },
  };
  await assert.rejects(createDeploy(s.deps)(plan()), /graft failed/);
  assert.deepEqual(s.torn, ['pool-00000000']);
  assert.equal(s.admission.reserved().instances, 0);
});

test('a warm take-over that cannot be saved tears down the warm container and gives its reservation back', async (t) => {
  const s = await setup(t, {
    warm: (l) => ({ live: l, spec: { id: l.record.id, listenSocket: l.paths.socketPath, logFile: l.paths.logFile } as InstanceSpec, user: { uid: 1, gid: 1 } }),
  });
  s.state.failWrite = new Error('disk full');
  await assert.rejects(createDeploy(s.deps)(plan()), /disk full/);
  assert.deepEqual(s.torn, ['echo-warm1']);
  assert.deepEqual(s.state.removed, ['echo-warm1']);
  assert.equal(s.store.all().length, 0);
  assert.equal(s.admission.reserved().instances, 0);
});
