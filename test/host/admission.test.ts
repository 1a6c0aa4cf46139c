import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createAdmission } from '../../src/host/admission.ts';

test('admits until the instance limit, then refuses with a reason', () => {
  const a = createAdmission({ memoryMb: 10_000, cpuMillis: 10_000, instances: 5 });
  const results = Array.from({ length: 20 }, (_, i) => a.reserve(`i${i}`, { memoryMb: 64, cpuMillis: 100 }));
  assert.equal(results.filter((r) => r.ok).length, 5);
  const refused = results.filter((r) => !r.ok);
  assert.equal(refused.length, 15);
  for (const r of refused) if (!r.ok) assert.match(r.reason, /instance limit/);
  assert.deepEqual(a.reserved(), { memoryMb: 320, cpuMillis: 500, instances: 5 });
  assert.deepEqual(a.free(), { memoryMb: 10_000 - 320, cpuMillis: 9500, instances: 0 });
});

test('refuses on memory and on CPU, naming which', () => {
  const a = createAdmission({ memoryMb: 100, cpuMillis: 1000, instances: 10 });
  const first = a.reserve('a', { memoryMb: 80, cpuMillis: 100 });
  assert.ok(first.ok);
  const mem = a.reserve('b', { memoryMb: 40, cpuMillis: 100 });
  assert.ok(!mem.ok && /memory/.test(mem.reason) && /20 MB free/.test(mem.reason));
  const cpu = a.reserve('c', { memoryMb: 10, cpuMillis: 1000 });
  assert.ok(!cpu.ok && /CPU/.test(cpu.reason));
  assert.deepEqual(a.reserved(), { memoryMb: 80, cpuMillis: 100, instances: 1 });
});

test('release frees exactly once and only the live reservation', () => {
  const a = createAdmission({ memoryMb: 100, cpuMillis: 1000, instances: 1 });
  const r = a.reserve('a', { memoryMb: 50, cpuMillis: 500 });
  assert.ok(r.ok);
  a.release(r.reservation);
  a.release(r.reservation);
  assert.deepEqual(a.reserved(), { memoryMb: 0, cpuMillis: 0, instances: 0 });
  const again = a.reserve('a', { memoryMb: 50, cpuMillis: 500 });
  assert.ok(again.ok);
  a.release(r.reservation); // stale: must not free the new booking
  assert.deepEqual(a.reserved(), { memoryMb: 50, cpuMillis: 500, instances: 1 });
  assert.ok(!a.reserve('a', { memoryMb: 1, cpuMillis: 1 }).ok, 'an id holds one reservation');
});

test('adopt records re-adopted instances even past capacity', () => {
  const a = createAdmission({ memoryMb: 100, cpuMillis: 100, instances: 1 });
  a.adopt('x', { memoryMb: 80, cpuMillis: 80 });
  a.adopt('y', { memoryMb: 80, cpuMillis: 80 });
  assert.deepEqual(a.reserved(), { memoryMb: 160, cpuMillis: 160, instances: 2 });
  assert.ok(!a.reserve('z', { memoryMb: 1, cpuMillis: 1 }).ok);
  assert.throws(() => createAdmission({ memoryMb: -1, cpuMillis: 1, instances: 1 }), /memoryMb/);
});
