import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createInFlightTracker, createRoundRobin, leastOutstanding } from '../../../src/provider/balancer/index.ts';

const t = (id: string, inFlight: number) => ({ id, inFlight });

test('leastOutstanding picks the target with the fewest outstanding requests', () => {
  const cases: Array<{ name: string; targets: Array<{ id: string; inFlight: number }>; want: string | undefined }> = [
    { name: 'no targets', targets: [], want: undefined },
    { name: 'one target', targets: [t('a', 7)], want: 'a' },
    { name: 'lowest wins', targets: [t('a', 3), t('b', 1), t('c', 2)], want: 'b' },
    { name: 'lowest last', targets: [t('a', 3), t('b', 2), t('c', 0)], want: 'c' },
    { name: 'ties without rand: first', targets: [t('a', 2), t('b', 1), t('c', 1)], want: 'b' },
    { name: 'all idle: first', targets: [t('a', 0), t('b', 0)], want: 'a' },
  ];
  for (const c of cases) assert.equal(leastOutstanding(c.targets)?.id, c.want, c.name);
});

test('leastOutstanding breaks ties with rand, only among the tied targets, uniformly', () => {
  const targets = [t('busy', 5), t('a', 1), t('b', 1), t('c', 1), t('busier', 9)];
  let seed = 42;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const counts = new Map<string, number>();
  for (let i = 0; i < 3000; i++) {
    const id = leastOutstanding(targets, rand)!.id;
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  assert.deepEqual([...counts.keys()].sort(), ['a', 'b', 'c']);
  for (const n of counts.values()) assert.ok(n > 800 && n < 1200, `uneven tie-break: ${[...counts]}`);
});

test('leastOutstanding keeps the element type', () => {
  const picked = leastOutstanding([{ id: 'x', inFlight: 0, url: 'http://h/x' }]);
  assert.equal(picked?.url, 'http://h/x');
});

test('roundRobin cycles through the targets and survives a shrinking list', () => {
  const rr = createRoundRobin();
  const three = [t('a', 0), t('b', 0), t('c', 0)];
  assert.deepEqual([1, 2, 3, 4, 5].map(() => rr(three)?.id), ['a', 'b', 'c', 'a', 'b']);
  assert.deepEqual([1, 2, 3].map(() => rr([t('x', 0), t('y', 0)])?.id), ['y', 'x', 'y']);
  assert.equal(rr([]), undefined);
  const other = createRoundRobin();
  assert.equal(other(three)?.id, 'a', 'each round robin has its own position');
});

test('tracker counts acquire/release per target; release is idempotent', () => {
  const tr = createInFlightTracker();
  const r1 = tr.acquire('a');
  const r2 = tr.acquire('a');
  const r3 = tr.acquire('b');
  assert.equal(tr.count('a'), 2);
  assert.equal(tr.count('b'), 1);
  assert.equal(tr.count('zzz'), 0);
  assert.equal(tr.total(), 3);
  r1();
  r1();
  assert.equal(tr.count('a'), 1, 'a double release must not count twice');
  r2();
  r3();
  assert.equal(tr.total(), 0);
});

test('tracker view feeds leastOutstanding so routing follows the live counts', () => {
  const tr = createInFlightTracker();
  const endpoints = [{ id: 'e1' }, { id: 'e2' }, { id: 'e3' }];
  const releases: Array<() => void> = [];
  const picks: string[] = [];
  for (let i = 0; i < 6; i++) {
    const target = leastOutstanding(tr.view(endpoints))!;
    picks.push(target.id);
    releases.push(tr.acquire(target.id));
  }
  assert.deepEqual(picks, ['e1', 'e2', 'e3', 'e1', 'e2', 'e3']);
  releases[1]!(); // e2 finishes one
  assert.equal(leastOutstanding(tr.view(endpoints))!.id, 'e2');
  assert.deepEqual(tr.view(endpoints).map((e) => e.inFlight), [2, 1, 2]);
});

test('forget drops a target; its stale releases do not touch a new count', () => {
  const tr = createInFlightTracker();
  const old = tr.acquire('a');
  tr.acquire('b');
  tr.forget('a');
  assert.equal(tr.count('a'), 0);
  assert.equal(tr.total(), 1);
  const fresh = tr.acquire('a');
  old();
  assert.equal(tr.count('a'), 1, 'a release from before forget() must not decrement the new cell');
  assert.equal(tr.total(), 2);
  fresh();
  assert.equal(tr.total(), 1);
  tr.forget('nobody');
  assert.equal(tr.total(), 1);
});
