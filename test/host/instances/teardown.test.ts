import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { teardownInstance } from '../../../src/host/instances/teardown.ts';
import { createAdmission } from '../../../src/host/admission.ts';
import { createInstanceStore } from '../../../src/host/instances/instance-store.ts';
import { fakeDriver, fakeMounter, fakeRunning, liveIn, memoryState, recordingLogger } from '../fixtures/fakes.ts';

/** A live instance whose dirs exist under a temp dir, holding a running process, a mount, a lease, imports and a reservation. */
async function holding(t: { after(fn: () => Promise<void>): void }) {
  const base = await mkdtemp(join(tmpdir(), 'shoal-td-'));
  t.after(() => rm(base, { recursive: true, force: true }));
  const state = memoryState();
  const paths = state.paths;
  state.paths = (id) => Object.fromEntries(Object.entries(paths(id)).map(([k, v]) => [k, v.replace('/nonexistent', base)])) as any;
  const store = createInstanceStore({ state });
  const driver = fakeDriver();
  const l = liveIn(store, 'echo-1', driver, { state: 'ready', mounted: true });
  for (const d of [l.paths.upper, l.paths.work, l.paths.rootfs, l.paths.socketDir, l.paths.stateDir]) await mkdir(d, { recursive: true });
  const admission = createAdmission({ memoryMb: 100, cpuMillis: 100, instances: 1 });
  const reserved = admission.reserve('echo-1', { memoryMb: 64, cpuMillis: 10 });
  assert.ok(reserved.ok);
  l.reservation = reserved.reservation;
  const running = fakeRunning('echo-1');
  l.running = running;
  let released = 0;
  l.lease = { lowerDirs: [], flatDir: undefined, stats: { bytes: 0, layersFetched: 0, layersCached: 0 }, timings: { pull: undefined, unpack: undefined }, release: () => void released++ };
  let importsClosed = 0;
  l.imports = { close: () => void importsClosed++ };
  const mounter = fakeMounter();
  mounter.mounts.add(l.paths.rootfs);
  const log = recordingLogger();
  return { l, driver, running, admission, mounter, log, released: () => released, importsClosed: () => importsClosed, deps: { mounter, admission, log } };
}

test('teardown stops, destroys, closes, unmounts, removes the dirs and gives back lease and reservation, once', async (t) => {
  const h = await holding(t);
  const first = teardownInstance(h.deps, h.l);
  assert.equal(teardownInstance(h.deps, h.l), first, 'one teardown per instance');
  await first;
  assert.deepEqual(h.running.calls, ['stop']);
  assert.equal(h.l.stopping, true);
  assert.deepEqual(h.driver.calls, ['destroy echo-1']);
  assert.equal(h.importsClosed(), 1);
  assert.equal(h.l.imports, undefined);
  assert.equal(h.l.record.mounted, false);
  assert.equal(h.mounter.mounts.size, 0);
  assert.deepEqual(await readdir(h.l.paths.dir), [], 'the instance dir is empty (its log and record stay if any)');
  assert.equal(h.released(), 1);
  assert.equal(h.admission.reserved().instances, 0);
  assert.equal(h.l.reservation, undefined);
});

test('a paused instance is resumed before its stop; a failed resume is logged and the stop still runs', async (t) => {
  const h = await holding(t);
  h.l.record.state = 'paused';
  h.running.fail = { resume: new Error('thaw failed') };
  await teardownInstance(h.deps, h.l);
  assert.deepEqual(h.running.calls, ['resume', 'stop']);
  assert.ok(h.log.lines.some((x) => x.level === 'warn' && /resuming before stop/.test(x.msg ?? '')));
});

test('a failing step does not stop the others; the failures come back together', async (t) => {
  const h = await holding(t);
  h.driver.failDestroy = new Error('runc delete failed');
  h.mounter.failUnmount = new Error('device busy');
  await assert.rejects(teardownInstance(h.deps, h.l), (e: any) => e.code === 'internal' && /runc delete failed/.test(e.message) && /device busy/.test(e.message) && /still mounted/.test(e.message));
  assert.equal(h.importsClosed(), 1);
  assert.equal(h.released(), 1);
  assert.equal(h.admission.reserved().instances, 0);
  assert.ok((await readdir(h.l.paths.dir)).includes('root'), 'nothing is removed under a mount');
  assert.equal(h.log.lines.filter((x) => x.level === 'error').length, 2);
});

test('an instance that already exited is not stopped again', async (t) => {
  const h = await holding(t);
  h.l.exit = { reason: 'crashed', code: 1, signal: undefined, at: 1 };
  await teardownInstance(h.deps, h.l);
  assert.deepEqual(h.running.calls, []);
});
