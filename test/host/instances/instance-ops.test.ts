import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setPaused, statsOf } from '../../../src/host/instances/instance-ops.ts';
import { createEventBus } from '../../../src/host/events.ts';
import type { LiveInstance } from '../../../src/host/instances/instance-store.ts';
import { fakeDriver, fakeRunning, liveIn, recordingLogger, storeWith } from '../fixtures/fakes.ts';

function setup(state: 'ready' | 'paused' | 'crashed' = 'ready') {
  const { store } = storeWith();
  const l = liveIn(store, 'echo-1', fakeDriver(), { state });
  const running = fakeRunning('echo-1');
  l.running = running;
  const events = createEventBus();
  const saved: string[] = [];
  const deps = { events, save: async (x: LiveInstance) => void saved.push(x.record.state) };
  return { l, running, events, saved, deps };
}

test('pause then resume: the driver is asked, the state saved, each told', async () => {
  const s = setup();
  await setPaused(s.deps, s.l, 'paused');
  await setPaused(s.deps, s.l, 'paused');
  await setPaused(s.deps, s.l, 'ready');
  assert.deepEqual(s.running.calls, ['pause', 'resume'], 'already paused is a no-op');
  assert.deepEqual(s.saved, ['paused', 'ready']);
  assert.deepEqual(s.events.since(0).map((e) => e.type), ['paused', 'resumed']);
});

test('only a ready instance pauses and only a paused one resumes; drivers that cannot pause say so', async () => {
  const crashed = setup('crashed');
  await assert.rejects(setPaused(crashed.deps, crashed.l, 'paused'), (e: any) => e.code === 'conflict' && /crashed/.test(e.message));
  await assert.rejects(setPaused(crashed.deps, crashed.l, 'ready'), (e: any) => e.code === 'conflict' && /resumed when paused/.test(e.message));
  const noPause = setup('ready');
  (noPause.l.driver.capabilities as { canPause: boolean }).canPause = false;
  await assert.rejects(setPaused(noPause.deps, noPause.l, 'paused'), (e: any) => e.code === 'unsupported');
  assert.deepEqual(noPause.running.calls, []);
  const failing = setup('ready');
  failing.running.fail = { pause: new Error('freezer') };
  await assert.rejects(setPaused(failing.deps, failing.l, 'paused'), /freezer/);
  assert.equal(failing.l.record.state, 'ready');
});

test('stats leave out what is unknown; a failure is logged and gives none', async () => {
  const s = setup();
  const log = recordingLogger();
  assert.deepEqual(await statsOf(s.running, 'echo-1', log), { memoryBytes: 1024, pids: 3 });
  s.running.fail = { stats: new Error('cgroup gone') };
  assert.equal(await statsOf(s.running, 'echo-1', log), undefined);
  assert.deepEqual(log.lines.map((l) => [l.level, (l.obj as any).instance]), [['warn', 'echo-1']]);
});
