import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createExitHandler, describeExit, exitedEarly, exitRecord, stateAfter } from '../../../src/host/instances/exit-handling.ts';
import { createEventBus } from '../../../src/host/events.ts';
import type { LiveInstance } from '../../../src/host/instances/instance-store.ts';
import { fakeRunning, liveIn, recordingLogger, storeWith } from '../fixtures/fakes.ts';

function setup() {
  const { store } = storeWith();
  const events = createEventBus();
  const log = recordingLogger();
  const calls: string[] = [];
  let failTeardown: Error | undefined;
  const handler = createExitHandler({
    events,
    log,
    teardown: async (l: LiveInstance) => {
      calls.push(`teardown ${l.record.id}`);
      if (failTeardown) throw failTeardown;
    },
    save: async (l: LiveInstance) => void calls.push(`save ${l.record.id} ${l.record.state}`),
    afterCleanup: () => void calls.push('afterCleanup'),
    onUnroutable: (id) => void calls.push(`unroutable ${id}`),
  });
  return { store, events, log, calls, handler, failTeardown: (e: Error) => (failTeardown = e) };
}

const settle = () => new Promise((r) => setImmediate(r));

test('the state an exit leaves', () => {
  const at = 1;
  assert.equal(stateAfter({ reason: 'oom', code: 137, signal: undefined, at }), 'oom');
  assert.equal(stateAfter({ reason: 'exited', code: 0, signal: undefined, at }), 'exited');
  assert.equal(stateAfter({ reason: 'exited', code: 2, signal: undefined, at }), 'crashed');
  assert.equal(stateAfter({ reason: 'crashed', code: undefined, signal: 'SIGSEGV', at }), 'crashed');
  assert.equal(stateAfter({ reason: 'killed', code: undefined, signal: 'SIGKILL', at }), 'crashed');
  assert.deepEqual(exitRecord({ reason: 'exited', code: 2, signal: undefined, at }), { reason: 'exited', code: 2, at });
  assert.equal(describeExit({ reason: 'crashed', code: 3, signal: 'SIGABRT', at }), 'crashed, code 3, signal SIGABRT');
  const e = exitedEarly({ reason: 'exited', code: 7, signal: undefined, at }, { log: 'boom' });
  assert.equal(e.code, 'unavailable');
  assert.deepEqual(e.detail, { log: 'boom' });
});

test('an unexpected exit leaves the routable set, is told, then is torn down and saved', async () => {
  const s = setup();
  const l = liveIn(s.store, 'echo-1', undefined, { state: 'ready' });
  const running = fakeRunning('echo-1');
  s.handler.watch(l, running);
  running.exit({ reason: 'exited', code: 3 });
  await settle();
  await settle();
  assert.equal(l.record.state, 'crashed');
  assert.deepEqual(l.record.exit?.code, 3);
  assert.deepEqual(s.events.since(0).map((e) => [e.type, e.code]), [['crashed', 3]]);
  assert.deepEqual(s.calls, ['unroutable echo-1', 'teardown echo-1', 'save echo-1 crashed', 'afterCleanup']);
});

test('an exit we asked for is only told', () => {
  const s = setup();
  const l = liveIn(s.store, 'echo-1', undefined, { state: 'stopping' });
  l.stopping = true;
  s.handler.onExit(l, { reason: 'killed', code: undefined, signal: 'SIGTERM', at: 5 });
  assert.equal(l.record.state, 'stopping');
  assert.deepEqual(s.events.since(0).map((e) => [e.type, e.signal]), [['exited', 'SIGTERM']]);
  assert.deepEqual(s.calls, []);
});

test('an exit while starting is left to the deployment; a failed watch is a crash with its message', async () => {
  const s = setup();
  const l = liveIn(s.store, 'echo-1');
  s.handler.onExit(l, { reason: 'oom', code: undefined, signal: 'SIGKILL', at: 5 });
  assert.equal(l.record.state, 'oom');
  assert.deepEqual(s.calls, ['unroutable echo-1'], 'no teardown');
  const m = liveIn(s.store, 'echo-2', undefined, { state: 'ready' });
  s.handler.watch(m, { ...fakeRunning('echo-2'), exited: Promise.reject(new Error('lost the pid')) });
  await settle();
  const ev = s.events.since(0).at(-1)!;
  assert.deepEqual([ev.type, ev.instance, ev.message], ['crashed', 'echo-2', 'Error: lost the pid']);
});

test('a failed cleanup after an exit is logged, and the exit is still saved', async () => {
  const s = setup();
  s.failTeardown(new Error('umount busy'));
  const l = liveIn(s.store, 'echo-1', undefined, { state: 'ready' });
  s.handler.onExit(l, { reason: 'crashed', code: 1, signal: undefined, at: 5 });
  await settle();
  assert.ok(s.calls.includes('save echo-1 crashed'));
  assert.ok(s.log.lines.some((x) => x.level === 'error' && /umount busy/.test(String((x.obj as any).err))));
});

test('a failed save of the exit (a durable write) is logged with the instance, and cleanup still completes', async () => {
  const { store } = storeWith();
  const log = recordingLogger();
  let after = 0;
  const handler = createExitHandler({
    events: createEventBus(),
    log,
    teardown: async () => {},
    save: async () => Promise.reject(new Error('ENOSPC')),
    afterCleanup: () => void after++,
  });
  const l = liveIn(store, 'echo-1', undefined, { state: 'ready' });
  handler.onExit(l, { reason: 'exited', code: 0, signal: undefined, at: 5 });
  await settle();
  assert.equal(l.record.state, 'exited');
  assert.equal(after, 1);
  assert.deepEqual(
    log.lines.filter((x) => x.level === 'error').map((x) => [(x.obj as any).instance, x.msg, /ENOSPC/.test(String((x.obj as any).err))]),
    [['echo-1', 'saving the exit failed', true]],
  );
});
