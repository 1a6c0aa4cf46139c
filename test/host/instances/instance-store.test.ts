import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createInstanceStore, emitFor, isRoutable, newRecord } from '../../../src/host/instances/instance-store.ts';
import { createEventBus } from '../../../src/host/events.ts';
import { fakeDriver, liveIn, memoryState, plan } from '../fixtures/fakes.ts';

test('entries are found by id; an unknown id is not-found naming the field', () => {
  const state = memoryState();
  const store = createInstanceStore({ state });
  const l = liveIn(store, 'echo-1');
  assert.equal(store.get('echo-1'), l);
  assert.equal(store.find('nope'), undefined);
  assert.throws(() => store.get('nope'), (e: any) => e.code === 'not-found' && e.field === 'id');
  assert.equal(l.paths.socketPath, state.paths('echo-1').socketPath);
  assert.equal(l.reservation, undefined);
  store.delete('echo-1');
  assert.equal(store.has('echo-1'), false);
});

test('only routable states resolve, and only they count as live', () => {
  const store = createInstanceStore({ state: memoryState() });
  for (const [id, state] of [['a-1', 'ready'], ['b-1', 'paused'], ['c-1', 'starting'], ['d-1', 'stopping'], ['e-1', 'crashed'], ['f-1', 'exited'], ['g-1', 'oom']] as const) {
    liveIn(store, id, fakeDriver(), { state });
  }
  assert.deepEqual(store.resolve('a-1'), { socketPath: '/nonexistent/instances/a-1/sock/app.sock', state: 'ready' });
  assert.equal(store.resolve('e-1'), undefined);
  assert.equal(store.resolve('g-1'), undefined);
  assert.equal(store.routableCount(), 4);
  assert.deepEqual(['ready', 'crashed', 'stopping'].map((s) => isRoutable(s as any)), [true, false, true]);
  store.clear();
  assert.equal(store.all().length, 0);
});

test('save stamps updatedAt and writes the record; a failed write is passed on', async () => {
  const state = memoryState();
  const store = createInstanceStore({ state, now: () => 5000 });
  const l = liveIn(store, 'echo-1');
  await store.save(l);
  assert.equal(state.records.get('echo-1')?.updatedAt, 5000);
  state.failWrite = new Error('disk full');
  await assert.rejects(store.save(l), /disk full/);
});

test('a new record starts unmounted and starting; events name the instance and service', () => {
  const r = newRecord('echo-1', plan(), 'process', 42);
  assert.deepEqual([r.state, r.mounted, r.createdAt, r.updatedAt, r.driver], ['starting', false, 42, 42, 'process']);
  const events = createEventBus();
  const store = createInstanceStore({ state: memoryState() });
  emitFor(events, liveIn(store, 'echo-1'), 'crashed', { code: 3 });
  assert.deepEqual(
    events.since(0).map((e) => [e.type, e.instance, e.service, e.code]),
    [['crashed', 'echo-1', 'echo', 3]],
  );
});
