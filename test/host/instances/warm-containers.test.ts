import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createWarmContainers, warmKey } from '../../../src/host/instances/warm-containers.ts';
import type { InstanceSpec } from '../../../src/host/drivers/driver.ts';
import type { LiveInstance } from '../../../src/host/instances/instance-store.ts';
import { ShoalError } from '../../../src/protocol/errors.ts';
import type { RootfsSpec } from '../../../src/protocol/oci.ts';
import { fakeDriver, plan, recordingLogger, storeWith } from '../fixtures/fakes.ts';

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
