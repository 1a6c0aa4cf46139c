import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createWarmContainers, warmKey } from '../../../src/host/instances/warm-containers.ts';
import type { InstanceSpec } from '../../../src/host/drivers/driver.ts';
import type { LiveInstance } from '../../../src/host/instances/instance-store.ts';
import { ShoalError } from '../../../src/protocol/errors.ts';
import type { RootfsSpec } from '../../../src/protocol/oci.ts';
import { join } from 'node:path';
import { fakeDriver, plan, recordingLogger, storeWith } from '../fixtures/fakes.ts';
import { until } from '../../fixtures/until.ts';

const rootfs = { manifestDigest: 'sha256:aa', configDigest: 'sha256:bb', layers: [], process: { args: ['/a'], env: [], cwd: '/', user: undefined } } as RootfsSpec;
const settle = () => new Promise((r) => setImmediate(r));

test('containers are interchangeable only when driver, image, service, args, env and resources match', () => {
  const d = fakeDriver('runc');
  const k = warmKey(d, plan(), rootfs);
  assert.equal(warmKey(d, plan(), rootfs), k);
  assert.notEqual(warmKey(fakeDriver('other'), plan(), rootfs), k);
  assert.notEqual(warmKey(d, plan(), { manifestDigest: 'sha256:cc' }), k);
  assert.notEqual(warmKey(d, plan({ env: { A: '1' } }), rootfs), k);
  assert.notEqual(warmKey(d, plan({ args: ['/b'] }), rootfs), k);
  assert.notEqual(warmKey(d, plan({ resources: { memoryMb: 65, cpuMillis: 100, pids: 64 } }), rootfs), k);
  assert.equal(warmKey(d, plan({ store: 'http://elsewhere' }), rootfs), k, 'the store does not shape the container');
});

function setup() {
  const { store, state } = storeWith();
  const log = recordingLogger();
  const torn: string[] = [];
  const warm = createWarmContainers({
    store,
    state,
    log,
    prepareRoot: async (l: LiveInstance) => ({ spec: { id: l.record.id } as InstanceSpec, user: { uid: 1, gid: 1 }, mountStart: 0, mountEnd: 0 }),
    teardown: async (l: LiveInstance) => void torn.push(l.record.id),
  });
  return { warm, state, log, torn };
}

test('a driver that can prepare gets a container made ahead, which take hands out for the same plan', async () => {
  const s = setup();
  const d = fakeDriver();
  const prepared: string[] = [];
  d.prepare = async (spec) => void prepared.push(spec.id);
  s.warm.refill(d, plan(), rootfs, async () => {});
  await settle();
  assert.equal(prepared.length, 1);
  assert.equal(s.warm.take(d, plan({ env: { X: '1' } }), rootfs), undefined);
  const w = s.warm.take(d, plan(), rootfs);
  assert.equal(w?.live.record.id, prepared[0]);
  assert.equal(w?.live.record.state, 'starting');
  assert.equal(w?.live.reservation, undefined, 'pool entries hold no reservation');
});

test('a driver without prepare gets none; one that says unsupported is not asked again; failures are cleaned up', async () => {
  const s = setup();
  s.warm.refill(fakeDriver(), plan(), rootfs, async () => {});
  await settle();
  assert.equal(s.warm.take(fakeDriver(), plan(), rootfs), undefined);
  const d = fakeDriver();
  let asked = 0;
  d.prepare = async () => {
    asked++;
    throw new ShoalError('unsupported', 'no shim');
  };
  s.warm.refill(d, plan(), rootfs, async () => {});
  await settle();
  await settle();
  s.warm.refill(d, plan(), rootfs, async () => {});
  await settle();
  assert.equal(asked, 1);
  assert.equal(s.torn.length, 1);
  assert.deepEqual(s.state.removed, s.torn);
  assert.ok(s.log.lines.some((l) => l.level === 'warn' && /pre-create/.test(l.msg ?? '')));
});

test('close destroys what is pooled', async () => {
  const s = setup();
  const d = fakeDriver();
  d.prepare = async () => {};
  s.warm.refill(d, plan(), rootfs, async () => {});
  await settle();
  await s.warm.close();
  assert.equal(s.torn.length, 1);
  assert.deepEqual(s.state.removed, s.torn);
  assert.equal(s.warm.take(d, plan(), rootfs), undefined);
});

test('a new version supersedes the pooled containers of the old one; drop discards a removed service\'s, also one being made', async () => {
  const s = setup();
  const d = fakeDriver();
  d.prepare = async () => {};
  const v1 = plan();
  const v2 = plan({ service: { name: 'echo', version: '2' } });
  const other = plan({ service: { name: 'other', version: '1' } });
  s.warm.refill(d, v1, rootfs, async () => {});
  s.warm.refill(d, other, rootfs, async () => {});
  await settle();
  assert.deepEqual(s.warm.list().map((w) => w.service), [v1.service, other.service]);
  s.warm.refill(d, v2, rootfs, async () => {}); // a deployment of version 2 here
  await settle();
  assert.deepEqual(s.warm.list().map((w) => w.service).sort((a, b) => a.name.localeCompare(b.name)), [v2.service, other.service]);
  assert.equal(s.warm.take(d, v1, rootfs), undefined);
  assert.equal(s.torn.length, 1, 'the version 1 container was destroyed');

  // Removed while one is being made: it is destroyed when made, never pooled.
  let release!: () => void;
  d.prepare = () => new Promise<void>((r) => (release = r));
  s.warm.take(d, other, rootfs);
  s.warm.refill(d, other, rootfs, async () => {});
  await settle();
  assert.equal(s.warm.drop('echo'), 1);
  assert.equal(s.warm.drop('other'), 0);
  release();
  await settle();
  await settle();
  assert.deepEqual(s.warm.list(), []);
  assert.equal(s.torn.length, 3);
});

// ---- the template pool ----

async function templateSetup(t: { after(fn: () => Promise<void>): void }, serviceEntries: Record<string, string | null>) {
  const { mkdir, mkdtemp, rm, writeFile } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dir = await mkdtemp(join(tmpdir(), 'shoal-wt-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const tpl = join(dir, 'layers', 'tpl');
  await mkdir(join(tpl, 'usr', 'bin'), { recursive: true });
  await writeFile(join(tpl, 'usr', 'bin', 'node'), 'x');
  const svcDir = (digest: string) => join(dir, 'layers', digest);
  const makeService = async (digest: string) => {
    for (const [p, content] of Object.entries(serviceEntries)) {
      if (content === null) await mkdir(join(svcDir(digest), p), { recursive: true });
      else {
        await mkdir(join(svcDir(digest), p, '..'), { recursive: true });
        await writeFile(join(svcDir(digest), p), content);
      }
    }
  };
  await makeService('svc-a');
  await makeService('svc-b');
  const { store, state } = storeWith();
  const log = recordingLogger();
  const torn: string[] = [];
  const released: string[] = [];
  const warm = createWarmContainers({
    store,
    state,
    log,
    limits: { perImage: 0, perTemplate: 1 },
    prepareRoot: async (l: LiveInstance, r: RootfsSpec) => {
      l.record.rootPath = `/roots/${l.record.id}`;
      l.lease = { lowerDirs: [], flatDir: undefined, stats: { bytes: 0, layersFetched: 0, layersCached: 0 }, timings: { pull: undefined, unpack: undefined }, release: () => void released.push(`template of ${l.record.id} (${r.layers.length} layers)`) };
      return { spec: { id: l.record.id } as InstanceSpec, user: { uid: 0, gid: 0 }, mountStart: 0, mountEnd: 0 };
    },
    teardown: async (l: LiveInstance) => void torn.push(l.record.id),
    layers: {
      prepare: async (image) => ({
        lowerDirs: image.layers.map((l) => (l.digest === 'tpl' ? tpl : svcDir(l.digest))),
        flatDir: undefined,
        stats: { bytes: 7, layersFetched: 1, layersCached: 1 },
        timings: { pull: undefined, unpack: undefined },
        release: () => void released.push(`lease ${image.manifestDigest}`),
      }),
    },
  });
  const layer = (d: string) => ({ digest: d, diffId: d, size: 1, mediaType: 'x' });
  const image = (svc: string): RootfsSpec => ({ manifestDigest: `sha256:${svc}`, configDigest: 'sha256:c', layers: [layer('tpl'), layer(svc)], process: { args: ['/usr/bin/node', 'server.mjs'], env: ['PATH=/usr/bin'], cwd: '/app', user: undefined } });
  const d = fakeDriver();
  const generic: InstanceSpec[] = [];
  const grafted: Array<{ id: string; layers: unknown }> = [];
  Object.assign(d, {
    prepare: async () => {},
    prepareGeneric: async (spec: InstanceSpec) => void generic.push(spec),
    graft: async (id: string, layers: unknown) => void grafted.push({ id, layers }),
  });
  return { warm, d, image, generic, grafted, torn, released, svcDir };
}

test('a template container made after one service is taken by another service first deployment, once, with that service own spec and layer', async (t) => {
  const s = await templateSetup(t, { 'app/server.mjs': 'x' });
  // svc-a deployed (ordinary path): a template container follows, holding no svc-a setting.
  s.warm.refill(s.d, plan({ service: { name: 'svc-a', version: '1' }, env: { SECRET_A: '1' } }), s.image('svc-a'), async () => {});
  await until('a template container', () => s.generic.length === 1 && s.warm.list().length === 1);
  assert.match(s.generic[0]!.id, /^pool-/);
  assert.deepEqual(s.warm.list()[0]!.service, { name: 'template', version: '0' });

  const w = await s.warm.takeTemplate(s.d, plan({ service: { name: 'svc-b', version: '1' }, env: { B: '2' } }), s.image('svc-b'), async () => {});
  assert.ok(w?.attach);
  assert.equal(w.live.record.id, s.generic[0]!.id);
  assert.deepEqual(w.live.record.plan.service, { name: 'template', version: '0' }, 'made under no service (the deployment takes it over)');
  assert.equal(w.live.record.plan.env, undefined, 'nothing of svc-a in it');
  assert.ok(w.spec.env.includes('SHOAL_SERVICE=svc-b') && w.spec.env.includes('B=2'));
  assert.deepEqual(w.spec.args, ['/usr/bin/node', 'server.mjs']);
  assert.equal(w.spec.cwd, '/app');
  assert.deepEqual(w.pull, { bytes: 7, layersFetched: 1, layersCached: 1 }, 'what leasing its layer fetched');
  assert.equal(w.live.record.rootfs?.manifestDigest, 'sha256:svc-b');
  assert.ok(s.released.some((r) => r.startsWith('template of')), 'the template-only lease went, the whole image is leased');
  await w.attach();
  assert.deepEqual(s.grafted, [{ id: w.live.record.id, layers: { parent: join(s.svcDir('svc-b'), '..'), mounts: [{ name: 'app', lowerDirs: [join(s.svcDir('svc-b'), 'app')] }], sizeBytes: 64 * 1024 * 1024 } }]);
  assert.equal(await s.warm.takeTemplate(s.d, plan({ service: { name: 'svc-c', version: '1' } }), s.image('svc-b'), async () => {}), undefined, 'taken: never handed out again');
  await s.warm.close();
});

test('an image whose service layer cannot be added to its template gets no template container', async (t) => {
  const s = await templateSetup(t, { 'usr/lib/x': 'x' });
  s.warm.refill(s.d, plan({ service: { name: 'svc-a', version: '1' } }), s.image('svc-a'), async () => {});
  await settle();
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(s.generic.length, 0);
  assert.equal(await s.warm.takeTemplate(s.d, plan({ service: { name: 'svc-b', version: '1' } }), s.image('svc-b'), async () => {}), undefined);
  await s.warm.close();
});
