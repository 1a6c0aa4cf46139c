import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { createOr, createPar, createRef, type Reply, type Target } from '../../src/provider/intermediaries/engine.ts';

interface Fake extends Target {
  calls: number;
  aborted: number;
  live: number;
}

function fake(id: string, behave: (n: number, signal?: AbortSignal) => Promise<Reply>): Fake {
  const f: Fake = {
    id,
    calls: 0,
    aborted: 0,
    live: 0,
    async send(_op, _body, signal) {
      f.calls++;
      f.live++;
      signal?.addEventListener('abort', () => f.aborted++, { once: true });
      try {
        return await behave(f.calls, signal);
      } finally {
        f.live--;
      }
    },
  };
  return f;
}

const after = (ms: number, reply: Reply, signal?: AbortSignal) => sleep(ms, reply, signal ? { signal } : undefined);
const okReply = (by: string): Reply => ({ status: 200, body: JSON.stringify({ by }) });

test('or spreads load: idle targets take turns, a slow one gets fewer', async () => {
  const a = fake('a', () => after(1, okReply('a')));
  const b = fake('b', () => after(1, okReply('b')));
  const c = fake('c', () => after(1, okReply('c')));
  const or = createOr('or', [a, b, c]);
  for (let i = 0; i < 30; i++) await or.send('Op', '{}');
  assert.deepEqual([a.calls, b.calls, c.calls], [10, 10, 10]);

  // A target still busy with a message gets no other while an idle one is there (no timers: deterministic).
  let release: () => void = () => undefined;
  const stuck = new Promise<void>((r) => (release = r));
  const slow = fake('slow', async () => { await stuck; return okReply('slow'); });
  const fast = fake('fast', async () => okReply('fast'));
  const or2 = createOr('or2', [slow, fast]);
  const sent: Promise<Reply>[] = [];
  for (let i = 0; i < 20; i++) {
    sent.push(or2.send('Op', '{}'));
    await new Promise((r) => setImmediate(r));
  }
  assert.deepEqual([slow.calls, fast.calls], [1, 19], 'least outstanding');
  release();
  await Promise.all(sent);
});

test('par: the first success wins, the others are cancelled', async () => {
  const slow = fake('slow', (_n, s) => after(200, okReply('slow'), s));
  const fast = fake('fast', () => after(5, okReply('fast')));
  const par = createPar('par', [slow, fast]);
  const t0 = performance.now();
  const r = await par.send('Op', '{}');
  assert.equal(JSON.parse(r.body).by, 'fast');
  assert.ok(performance.now() - t0 < 150);
  await sleep(5);
  assert.equal(slow.aborted, 1, 'the slow target was cancelled');
  assert.equal(slow.live, 0);
});

test('par survives one failing target (error or non-2xx) and returns the last failure when all fail', async () => {
  const broken = fake('broken', async () => { throw new Error('connection refused'); });
  const refusing = fake('refusing', () => after(1, { status: 503, body: '{"error":{"code":"unavailable"}}' }));
  const good = fake('good', () => after(10, okReply('good')));
  assert.equal(JSON.parse((await createPar('p', [broken, good]).send('Op', '{}')).body).by, 'good');
  assert.equal(JSON.parse((await createPar('p', [refusing, good]).send('Op', '{}')).body).by, 'good');
  const late = fake('late', () => after(20, { status: 502, body: 'last' }));
  const r = await createPar('p', [refusing, late]).send('Op', '{}');
  assert.deepEqual([r.status, r.body], [502, 'last']);
  await assert.rejects(createPar('p', [broken]).send('Op', '{}'), /connection refused/);
});

test('par: the caller aborting cancels every target', async () => {
  const a = fake('a', (_n, s) => after(500, okReply('a'), s));
  const b = fake('b', (_n, s) => after(500, okReply('b'), s));
  const ac = new AbortController();
  const p = createPar('p', [a, b]).send('Op', '{}', ac.signal);
  setTimeout(() => ac.abort(new Error('caller gone')), 10);
  await assert.rejects(p);
  assert.deepEqual([a.aborted, b.aborted], [1, 1]);
});

test('ref update under load: nothing lost, in-flight finish on the old target, nothing sent to it after update', async () => {
  let updated = false;
  let sentToOldAfterUpdate = 0;
  const old = fake('old', async () => {
    if (updated) sentToOldAfterUpdate++;
    return after(Math.random() * 10, okReply('old'));
  });
  const next = fake('next', () => after(Math.random() * 10, okReply('next')));
  const ref = createRef('r', old);
  const replies: Promise<Reply>[] = [];
  let drained: Promise<void> | undefined;
  for (let i = 0; i < 400; i++) {
    replies.push(ref.send('Op', JSON.stringify({ i })));
    if (i === 200) {
      assert.ok(old.live > 0, 'messages are in flight on the old target at the switch');
      drained = ref.update(next).drained;
      updated = true;
    }
    if (i % 20 === 0) await sleep(1);
  }
  const all = await Promise.all(replies);
  assert.equal(all.length, 400);
  assert.ok(all.every((r) => r.status === 200), 'every message answered');
  assert.equal(sentToOldAfterUpdate, 0);
  assert.equal(old.calls, 201);
  assert.equal(next.calls, 199);
  await drained;
  assert.equal(old.live, 0);
  assert.equal(ref.current(), next);
});

test('or: a retryable failure goes on to another target, once each; others come back as they are', async () => {
  const dead = fake('dead', () => after(1, { status: 502, body: 'dead' }));
  const alive = fake('alive', () => after(1, okReply('alive')));
  const or = createOr('or', [dead, alive], { retryable: (_op, f) => 'reply' in f && f.reply.status === 502 });
  for (let i = 0; i < 6; i++) assert.equal(JSON.parse((await or.send('Op', '{}')).body).by, 'alive');
  assert.equal(alive.calls, 6);
  const both = createOr('or', [dead, fake('dead2', () => after(1, { status: 502, body: 'dead2' }))], { retryable: () => true });
  assert.equal((await both.send('Op', '{}')).status, 502, 'every target tried once, then the last failure');
  const noRetry = createOr('or', [dead, alive]);
  const statuses = [];
  for (let i = 0; i < 4; i++) statuses.push((await noRetry.send('Op', '{}')).status);
  assert.deepEqual(statuses.sort(), [200, 200, 502, 502], 'without retryable, a failure is the answer');
});
