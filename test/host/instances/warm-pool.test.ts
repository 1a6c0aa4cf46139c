import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createWarmPool } from '../../../src/host/instances/warm-pool.ts';
import { recordingLogger } from '../fixtures/fakes.ts';

function setup(perKey: number, max: number) {
  const discarded: string[] = [];
  const log = recordingLogger();
  const pool = createWarmPool<string>({ perKey, max, log, discard: async (e) => void discarded.push(e) });
  return { pool, discarded, log };
}

const settle = () => new Promise((r) => setImmediate(r));

test('refills up to perKey per key, counting those being made; take hands each out once', async () => {
  const { pool } = setup(2, 10);
  let made = 0;
  const make = async () => `a${++made}`;
  for (let i = 0; i < 5; i++) pool.refill('a', make);
  assert.deepEqual(pool.size(), { ready: 0, making: 2 });
  await settle();
  assert.deepEqual(pool.size(), { ready: 2, making: 0 });
  assert.equal(made, 2);
  assert.equal(pool.take('b'), undefined);
  assert.equal(pool.take('a'), 'a1');
  assert.equal(pool.take('a'), 'a2');
  assert.equal(pool.take('a'), undefined);
});

test('full: another key\'s oldest entry makes room; with only this key nothing is made', async () => {
  const { pool, discarded } = setup(2, 2);
  pool.refill('a', async () => 'a1');
  pool.refill('b', async () => 'b1');
  await settle();
  pool.refill('c', async () => 'c1');
  await settle();
  assert.deepEqual(discarded, ['a1']);
  assert.equal(pool.take('c'), 'c1');
  const only = setup(2, 2);
  only.pool.refill('a', async () => 'a1');
  only.pool.refill('a', async () => 'a2');
  await settle();
  only.pool.refill('b', async () => 'b1');
  only.pool.refill('b', async () => 'b2');
  await settle();
  assert.deepEqual(only.discarded, ['a1', 'a2']);
  assert.equal(only.pool.take('a'), undefined);
  assert.equal(only.pool.take('b'), 'b1');
});

test('off when perKey or max is 0; a give-up makes nothing; a throw is logged and frees its slot', async () => {
  for (const [perKey, max] of [[0, 4], [1, 0]] as const) {
    const { pool } = setup(perKey, max);
    let called = false;
    pool.refill('a', async () => ((called = true), 'x'));
    await settle();
    assert.equal(called, false);
  }
  const { pool, log } = setup(1, 4);
  pool.refill('a', async () => undefined);
  await settle();
  assert.deepEqual(pool.size(), { ready: 0, making: 0 });
  pool.refill('a', async () => {
    throw new Error('no shim');
  });
  await settle();
  assert.ok(log.lines.some((l) => l.level === 'warn' && /no shim/.test(String((l.obj as any).err))));
  pool.refill('a', async () => 'a1');
  await settle();
  assert.equal(pool.take('a'), 'a1');
});

test('close waits for entries being made, discards them and every ready one, and refills no more', async () => {
  const { pool, discarded, log } = setup(1, 4);
  pool.refill('a', async () => 'a1');
  await settle();
  let finish!: (v: string) => void;
  pool.refill('b', () => new Promise((r) => (finish = r)));
  const closed = pool.close();
  finish('b1');
  await closed;
  assert.deepEqual(discarded.sort(), ['a1', 'b1']);
  pool.refill('c', async () => 'c1');
  await settle();
  assert.equal(pool.take('c'), undefined);
  assert.equal(log.lines.length, 0);
});

test('a failing discard is logged, not thrown', async () => {
  const log = recordingLogger();
  const pool = createWarmPool<string>({ perKey: 1, max: 1, log, discard: async () => Promise.reject(new Error('rm failed')) });
  pool.refill('a', async () => 'a1');
  await settle();
  await pool.close();
  assert.ok(log.lines.some((l) => l.level === 'error' && /rm failed/.test(String((l.obj as any).err))));
});
