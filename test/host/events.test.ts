import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createEventBus } from '../../src/host/events.ts';

test('events get increasing seq, reach subscribers in order, and are kept for resuming', async () => {
  const bus = createEventBus({ historySize: 3 });
  const seen: string[] = [];
  const off = bus.subscribe((e) => seen.push(`${e.seq}:${e.type}`));
  const waiting = bus.next((e) => e.type === 'crashed');
  bus.emit({ type: 'started', instance: 'a-1', service: 'a' });
  bus.emit({ type: 'ready', instance: 'a-1', service: 'a' });
  bus.emit({ type: 'crashed', instance: 'a-1', service: 'a', code: 3 });
  const crashed = await waiting;
  assert.equal(crashed.code, 3);
  assert.ok(!('signal' in crashed), 'undefined fields are dropped');
  off();
  bus.emit({ type: 'removed', instance: 'a-1', service: 'a' });
  assert.deepEqual(seen, ['1:started', '2:ready', '3:crashed']);
  assert.deepEqual(
    bus.since(1).map((e) => e.seq),
    [2, 3, 4],
  );
  assert.deepEqual(bus.since(0).length, 3, 'history is bounded');
  await assert.rejects(bus.next(() => false, 10), /no matching host event/);
});

test('a throwing listener does not stop the others', () => {
  const errors: unknown[] = [];
  const bus = createEventBus({ onListenerError: (e) => errors.push(e) });
  let got = 0;
  bus.subscribe(() => {
    throw new Error('boom');
  });
  bus.subscribe(() => got++);
  bus.emit({ type: 'paused', instance: 'b-1', service: 'b' });
  assert.equal(got, 1);
  assert.equal(errors.length, 1);
});

test('without a handler a throwing listener is reported as a process warning, not dropped', async () => {
  const bus = createEventBus();
  const warned = new Promise<Error>((resolve) => process.once('warning', resolve));
  bus.subscribe(() => {
    throw new Error('listener bug');
  });
  bus.emit({ type: 'paused', instance: 'b-1', service: 'b' });
  assert.match((await warned).message, /listener failed: Error: listener bug/);
});
