import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRemoval, deadToPrune } from '../../../src/host/instances/removal.ts';
import { createEventBus } from '../../../src/host/events.ts';
import type { LiveInstance } from '../../../src/host/instances/instance-store.ts';
import { liveIn, recordingLogger, storeWith } from '../fixtures/fakes.ts';

function setup(failTeardowns = 0) {
  const { store, state } = storeWith();
  const events = createEventBus();
  const log = recordingLogger();
  const calls: string[] = [];
  let failures = failTeardowns;
  const removal = createRemoval({
    store,
    state,
    events,
    log,
    keepDead: 2,
    onUnroutable: (id) => void calls.push(`unroutable ${id}`),
    teardown: async (l: LiveInstance) => {
      calls.push(`teardown ${l.record.id} ${l.record.state}`);
      if (failures-- > 0) throw new Error('busy');
    },
  });
  return { store, state, events, log, calls, removal };
}

test('remove: unroutable, torn down, dir removed, forgotten, told; twice is the same removal', async () => {
  const s = setup();
  const l = liveIn(s.store, 'echo-1', undefined, { state: 'ready' });
  const a = s.removal.remove('echo-1');
  assert.equal(s.removal.remove('echo-1'), a);
  await a;
  assert.equal(l.stopping, true);
  assert.deepEqual(s.calls, ['unroutable echo-1', 'teardown echo-1 stopping']);
  assert.deepEqual(s.state.removed, ['echo-1']);
  assert.equal(s.store.has('echo-1'), false);
  assert.deepEqual(s.events.since(0).map((e) => e.type), ['removed']);
});

test('a starting instance cannot be removed; an unknown one is not-found', async () => {
  const s = setup();
  liveIn(s.store, 'echo-1');
  await assert.rejects(s.removal.remove('echo-1'), (e: any) => e.code === 'conflict');
  assert.throws(() => s.removal.remove('nope'), (e: any) => e.code === 'not-found');
});

test('a failed teardown is tried once more; a second failure is passed on and the record stays', async () => {
  const once = setup(1);
  liveIn(once.store, 'echo-1', undefined, { state: 'crashed' });
  await once.removal.remove('echo-1');
  assert.equal(once.calls.filter((c) => c.startsWith('teardown')).length, 2);
  assert.deepEqual(once.state.removed, ['echo-1']);
  const twice = setup(2);
  liveIn(twice.store, 'echo-1', undefined, { state: 'crashed' });
  await assert.rejects(twice.removal.remove('echo-1'), /busy/);
  assert.deepEqual(twice.state.removed, []);
  assert.equal(twice.store.has('echo-1'), true);
});

test('ended instances past the limit go, oldest first; live ones and those being removed stay', async () => {
  const s = setup();
  const ended = (id: string, at: number) => {
    const l = liveIn(s.store, id, undefined, { state: 'crashed' });
    l.exit = { reason: 'crashed', code: 1, signal: undefined, at };
    return l;
  };
  ended('old-1', 1);
  ended('new-1', 30);
  ended('mid-1', 20);
  ended('older-1', 0);
  liveIn(s.store, 'live-1', undefined, { state: 'ready' });
  assert.deepEqual(deadToPrune(s.store.all(), 2).map((l) => l.record.id), ['older-1', 'old-1']);
  s.removal.pruneDead();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(s.state.removed.sort(), ['old-1', 'older-1']);
  assert.deepEqual(s.store.all().map((l) => l.record.id).sort(), ['live-1', 'mid-1', 'new-1']);
});
