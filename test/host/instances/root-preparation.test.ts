import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cacheModeOf, prepareInstanceRoot } from '../../../src/host/instances/root-preparation.ts';
import type { LiveInstance } from '../../../src/host/instances/instance-store.ts';
import type { CacheMode, PreparedRoot } from '../../../src/host/layer-cache.ts';
import type { RootfsSpec } from '../../../src/protocol/oci.ts';
import { fakeDriver, fakeMounter, liveIn, storeWith } from '../fixtures/fakes.ts';

const rootfs: RootfsSpec = {
  manifestDigest: 'sha256:mm',
  configDigest: 'sha256:cc',
  layers: [
    { digest: 'sha256:l1', diffId: 'sha256:d1', size: 1, mediaType: 'x' },
    { digest: 'sha256:l2', diffId: 'sha256:d2', size: 1, mediaType: 'x' },
  ],
  process: { args: ['/bin/app'], env: [], cwd: '/', user: '5:6' },
};

function setup(isolation: 'none' | 'container') {
  const { store, state } = storeWith();
  const l = liveIn(store, 'echo-1', fakeDriver('d', isolation));
  const mounter = fakeMounter();
  const created: string[] = [];
  const saves: Array<{ rootfs: boolean; mounted: boolean; rootPath: string | undefined }> = [];
  const modes: CacheMode[] = [];
  const lease: PreparedRoot = {
    lowerDirs: ['/cache/l1', '/cache/l2'],
    flatDir: isolation === 'none' ? '/cache/flat/mm' : undefined,
    stats: { bytes: 2, layersFetched: 2, layersCached: 0 },
    timings: { pull: undefined, unpack: undefined },
    release() {},
  };
  const deps = {
    state: { create: async (id: string) => ((created.push(id), state.paths(id))) },
    save: async (x: LiveInstance) => void saves.push({ rootfs: x.record.rootfs !== undefined, mounted: x.record.mounted, rootPath: x.record.rootPath }),
    layerCache: { prepare: async (_i: unknown, _f: unknown, mode: CacheMode) => ((modes.push(mode), lease)) },
    mounter,
  };
  return { l, deps, mounter, created, saves, modes, lease };
}

test('isolated drivers get an overlay of the layers, topmost first, recorded as mounted before anything else runs', async () => {
  const s = setup('container');
  let pulled: PreparedRoot | undefined;
  const p = await prepareInstanceRoot(s.deps, s.l, rootfs, async () => {}, (x) => (pulled = x));
  assert.deepEqual(s.created, ['echo-1']);
  assert.deepEqual(s.modes, ['overlay']);
  assert.equal(pulled, s.lease);
  assert.equal(s.l.lease, s.lease);
  assert.deepEqual(s.mounter.calls, [`mount ${s.l.paths.rootfs} /cache/l2:/cache/l1`]);
  assert.deepEqual(s.saves, [
    { rootfs: true, mounted: false, rootPath: undefined },
    { rootfs: true, mounted: true, rootPath: s.l.paths.rootfs },
  ]);
  assert.equal(p.spec.rootfs, s.l.paths.rootfs);
  assert.deepEqual(p.user, { uid: 5, gid: 6 });
  assert.ok(p.spec.env.includes('SHOAL_LISTEN=/run/shoal/app.sock'));
  assert.ok(p.mountEnd >= p.mountStart);
});

test('drivers without isolation run from the flat tree, told host paths, with nothing mounted', async () => {
  const s = setup('none');
  const p = await prepareInstanceRoot(s.deps, s.l, rootfs, async () => {});
  assert.deepEqual(s.modes, ['flat']);
  assert.deepEqual(s.mounter.calls, []);
  assert.equal(s.l.record.mounted, false);
  assert.equal(p.spec.rootfs, '/cache/flat/mm');
  assert.ok(p.spec.env.includes(`SHOAL_LISTEN=${s.l.paths.socketDir}/app.sock`));
  assert.deepEqual([cacheModeOf(fakeDriver('x', 'none')), cacheModeOf(fakeDriver('x', 'container')), cacheModeOf(fakeDriver('x', 'isolate'))], ['flat', 'overlay', 'flat']);
});

test('a failed mount leaves the lease on the instance for teardown, and nothing recorded as mounted', async () => {
  const s = setup('container');
  s.deps.mounter.mountOverlay = async () => {
    throw new Error('mount: permission denied');
  };
  await assert.rejects(prepareInstanceRoot(s.deps, s.l, rootfs, async () => {}), /permission denied/);
  assert.equal(s.l.lease, s.lease);
  assert.equal(s.l.record.mounted, false);
});

test('a driver that bounds the root and maps ids gets a sized, id-mapped overlay and the bound in its spec', async () => {
  const s = setup('container');
  Object.assign(s.l.driver, { boundsRoot: true, idMapping: { hostId: 100000, count: 65536 } });
  s.l.record.plan = { ...s.l.record.plan, resources: { ...s.l.record.plan.resources, diskMb: 8 } };
  const seen: unknown[] = [];
  const mount = s.deps.mounter.mountOverlay;
  s.deps.mounter.mountOverlay = async (o) => {
    seen.push({ sizeBytes: o.sizeBytes, idmap: o.idmap });
    await mount(o);
  };
  const p = await prepareInstanceRoot(s.deps, s.l, rootfs, async () => {});
  assert.deepEqual(seen, [{ sizeBytes: 8 * 1024 * 1024, idmap: { hostId: 100000, count: 65536 } }]);
  assert.equal(p.spec.resources.diskBytes, 8 * 1024 * 1024);
  assert.equal(p.spec.listenSocket, s.l.paths.socketPath);
});
