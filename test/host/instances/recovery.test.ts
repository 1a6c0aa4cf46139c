import { test } from 'node:test';
import assert from 'node:assert/strict';
import { recoverInstances } from '../../../src/host/instances/recovery.ts';
import { createAdmission } from '../../../src/host/admission.ts';
import { createInstanceStore, newRecord, type LiveInstance } from '../../../src/host/instances/instance-store.ts';
import type { InstanceRecord } from '../../../src/host/host-state.ts';
import type { RootfsSpec } from '../../../src/protocol/oci.ts';
import { fakeDriver, fakeMounter, fakeRunning, memoryState, plan, recordingLogger } from '../fixtures/fakes.ts';

const rootfs: RootfsSpec = { manifestDigest: 'sha256:mm', configDigest: 'sha256:cc', layers: [], process: { args: ['/a'], env: [], cwd: '/', user: undefined } };

function record(id: string, over: Partial<InstanceRecord> = {}): InstanceRecord {
  return { ...newRecord(id, plan({ imports: [{ name: 'db', url: 'http://127.0.0.1:1/i' }] }), 'runc', 1), state: 'ready', rootfs, mounted: true, ...over };
}

function setup() {
  const state = memoryState();
  const store = createInstanceStore({ state });
  const runc = fakeDriver('runc');
  const mounter = fakeMounter();
  const admission = createAdmission({ memoryMb: 64, cpuMillis: 100, instances: 1 });
  const log = recordingLogger();
  const torn: string[] = [];
  const watched: string[] = [];
  const opened: Array<{ dir: string; uid: number | undefined }> = [];
  const retained: string[] = [];
  const deps = {
    state: { ...state, remove: state.remove },
    store,
    drivers: { runc },
    mounter,
    admission,
    layerCache: {
      retain: (image: { manifestDigest: string }, mode: string) => {
        retained.push(`${image.manifestDigest} ${mode}`);
        return undefined;
      },
    },
    openImportSockets: async (dir: string, _b: unknown, o: { uid?: number }) => {
      opened.push({ dir, uid: o.uid });
      return { close() {} };
    },
    teardown: async (l: LiveInstance) => void torn.push(l.record.id),
    watchExit: (l: LiveInstance) => void watched.push(l.record.id),
    log,
  };
  return { state, store, runc, mounter, admission, log, torn, watched, opened, retained, deps };
}

test('a live instance is re-adopted with its reservation, lease, sockets and exit watch; the rest is cleaned up', async () => {
  const s = setup();
  for (const r of [record('live-1'), record('stopped-1'), record('starting-1', { state: 'starting' }), record('gone-1', { driver: 'process' }), record('unmounted-1')]) {
    s.state.records.set(r.id, r);
  }
  s.mounter.mounts.add(s.state.paths('live-1').rootfs);
  s.mounter.mounts.add(`${s.state.instancesDir}/stray-1/root`);
  s.runc.recovered = [
    { id: 'live-1', status: 'paused', instance: fakeRunning('live-1') },
    { id: 'stopped-1', status: 'stopped', instance: undefined },
    { id: 'starting-1', status: 'running', instance: fakeRunning('starting-1') },
    { id: 'unmounted-1', status: 'running', instance: fakeRunning('unmounted-1') },
  ];
  const { adopted, cleaned } = await recoverInstances(s.deps);
  assert.deepEqual(adopted, ['live-1']);
  assert.deepEqual(cleaned.sort(), ['gone-1', 'starting-1', 'stopped-1', 'unmounted-1']);
  assert.deepEqual(s.runc.calls, ['recover live-1,stopped-1,starting-1,unmounted-1'], 'each driver is asked about its own instances');
  const l = s.store.get('live-1');
  assert.equal(l.record.state, 'paused');
  assert.equal(s.state.records.get('live-1')?.state, 'paused', 'saved');
  assert.equal(s.admission.reserved().memoryMb, 64);
  assert.deepEqual(s.retained, ['sha256:mm overlay']);
  assert.deepEqual(s.opened, [{ dir: l.paths.importsDir, uid: 65534 }]);
  assert.deepEqual(s.watched, ['live-1']);
  assert.deepEqual(s.torn.sort(), ['gone-1', 'starting-1', 'stopped-1', 'unmounted-1']);
  assert.deepEqual(s.state.removed.sort(), ['gone-1', 'starting-1', 'stopped-1', 'unmounted-1']);
  assert.deepEqual(s.store.all().map((x) => x.record.id), ['live-1']);
  assert.deepEqual([...s.mounter.mounts], [l.paths.rootfs], 'the stray mount went, the live one stayed');
  assert.ok(s.log.lines.some((x) => /no longer mounted/.test(String((x.obj as any).err))));
});

test('a driver whose recovery fails has its instances cleaned up; orphan dirs are unmounted and destroyed', async () => {
  const s = setup();
  s.state.records.set('live-1', record('live-1'));
  s.runc.recover = async () => {
    throw new Error('runc list failed');
  };
  s.deps.state.list = async () => ({ records: [...s.state.records.values()], orphans: ['orphan-1'] });
  s.mounter.mounts.add(s.state.paths('orphan-1').rootfs);
  const { adopted, cleaned } = await recoverInstances(s.deps);
  assert.deepEqual(adopted, []);
  assert.deepEqual(cleaned, ['live-1', 'orphan-1']);
  assert.ok(s.runc.calls.includes('destroy orphan-1'));
  assert.equal(s.mounter.mounts.size, 0);
  assert.ok(s.log.lines.some((x) => x.level === 'error' && /driver recovery failed/.test(x.msg ?? '')));
});

test('a failed removal of a dead instance\'s dir is logged, not silent', async () => {
  const s = setup();
  s.state.records.set('dead-1', record('dead-1'));
  s.deps.state.remove = async () => {
    throw new Error('EBUSY');
  };
  const { cleaned } = await recoverInstances(s.deps);
  assert.deepEqual(cleaned, ['dead-1']);
  assert.ok(s.log.lines.some((x) => x.level === 'error' && (x.obj as any).instance === 'dead-1' && /EBUSY/.test(String((x.obj as any).err))));
});
