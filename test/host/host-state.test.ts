import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHostState, isInstanceId, newInstanceId, type InstanceRecord } from '../../src/host/host-state.ts';

const plan = {
  service: { name: 'echo', version: '1' },
  image: 'echo:1',
  store: 'http://127.0.0.1:1',
  resources: { memoryMb: 64, cpuMillis: 100, pids: 32 },
};

function record(id: string): InstanceRecord {
  return {
    id,
    plan,
    driver: 'runc',
    state: 'starting',
    createdAt: 1,
    updatedAt: 1,
    rootfs: undefined,
    rootPath: undefined,
    mounted: false,
    timeline: undefined,
    exit: undefined,
  };
}

test('instance records are written atomically, read back and listed; bad dirs are orphans', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'shoal-state-'));
  t.after(() => rm(dataDir, { recursive: true, force: true }));
  const state = createHostState(dataDir);
  const id = newInstanceId('a-very-long-service-name-that-goes-on');
  assert.ok(isInstanceId(id), id);
  assert.ok(id.length <= 29, id);
  const p = await state.create(id);
  for (const d of [p.upper, p.work, p.rootfs, p.socketDir, p.importsDir, p.stateDir]) assert.ok((await stat(d)).isDirectory());
  await assert.rejects(state.create(id), /EEXIST/);
  const r = record(id);
  await state.write(r);
  r.state = 'ready';
  await state.write(r);
  assert.equal((await state.read(id))?.state, 'ready');
  assert.deepEqual(
    (await readdir(p.dir)).filter((n) => n.endsWith('.tmp')),
    [],
    'no temp files left',
  );
  // a dir without a record, and one with garbage
  await mkdir(join(state.instancesDir, 'orphan-1'));
  await mkdir(join(state.instancesDir, 'broken-2'));
  await writeFile(join(state.instancesDir, 'broken-2', 'instance.json'), '{nope');
  const listed = await state.list();
  assert.deepEqual(listed.records.map((x) => x.id), [id]);
  assert.deepEqual(listed.orphans.sort(), ['broken-2', 'orphan-1']);
  await state.remove(id);
  assert.equal(await state.read(id), undefined);
  assert.throws(() => state.paths('../etc'), /bad instance id/);
});

test('a missing state dir lists nothing', async () => {
  const state = createHostState(join(tmpdir(), 'shoal-state-missing-' + process.pid));
  assert.deepEqual(await state.list(), { records: [], orphans: [] });
});
