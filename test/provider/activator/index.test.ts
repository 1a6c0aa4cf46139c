import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import {
  createActivator,
  isActivatorError,
  type ActivatorFailure,
  type ActivatorTimers,
  type Demand,
} from '../../../src/provider/activator/index.ts';
import { httpStatusFor } from '../../../src/protocol/errors.ts';

/** Timers driven by the test: advance(ms) fires what is due. */
function fakeTimers(): ActivatorTimers & { advance(ms: number): void; pending(): number } {
  let now = 0;
  const due = new Map<number, { at: number; fn: () => void }>();
  let seq = 0;
  return {
    set(fn, ms) {
      const id = ++seq;
      due.set(id, { at: now + ms, fn });
      return id;
    },
    clear(h) {
      due.delete(h as number);
    },
    advance(ms) {
      now += ms;
      for (const [id, t] of [...due].sort((a, b) => a[1].at - b[1].at)) {
        if (t.at <= now && due.delete(id)) t.fn();
      }
    },
    pending: () => due.size,
  };
}

async function reasonOf(p: Promise<unknown>): Promise<ActivatorFailure> {
  try {
    await p;
  } catch (e) {
    assert.ok(isActivatorError(e), `expected an ActivatorError, got ${String(e)}`);
    return e.reason;
  }
  assert.fail('expected a rejection');
}

const flush = () => new Promise<void>((r) => setImmediate(r));

test('100 concurrent waits on a cold service make exactly one demand and are released in order', async () => {
  const timers = fakeTimers();
  const demands: Demand[] = [];
  const a = createActivator({ queueDepth: 100, timeoutMs: 30_000, timers, onDemand: (d) => demands.push(d) });
  const order: number[] = [];
  const waits = Array.from({ length: 100 }, (_, i) =>
    a.wait('echo').then(() => {
      order.push(i);
    }),
  );
  assert.deepEqual(demands, [{ service: 'echo', queued: 1, reason: 'cold' }]);
  assert.equal(a.queued('echo'), 100);
  assert.deepEqual(a.stats().services, [{ service: 'echo', queued: 100, deploying: 1 }]);

  a.release('echo');
  await Promise.all(waits);
  assert.deepEqual(order, Array.from({ length: 100 }, (_, i) => i), 'FIFO order');
  assert.equal(a.queued('echo'), 0);
  assert.equal(timers.pending(), 0, 'every timeout timer is cleared on release');
  assert.equal(demands.length, 1);
  assert.equal(a.stats().totals.released, 100);
});

test('a full queue refuses at once with queue-full, which the edge maps to 503', async () => {
  const timers = fakeTimers();
  const demands: Demand[] = [];
  const a = createActivator({ queueDepth: 3, timeoutMs: 1000, timers, retryAfterSeconds: 2, onDemand: (d) => demands.push(d) });
  const waiting = [a.wait('s'), a.wait('s'), a.wait('s')];
  // "At once": settled before the next turn of the event loop, never queued.
  const err = await Promise.race([a.wait('s').then(() => 'resolved', (e: unknown) => e), flush().then(() => 'still waiting')]);
  assert.ok(isActivatorError(err));
  assert.equal(err.reason, 'queue-full');
  assert.equal(err.code, 'unavailable');
  assert.equal(httpStatusFor(err.code), 503);
  assert.equal(err.retryAfterSeconds, 2);
  assert.match(err.message, /'s'.*3 messages already wait/);
  assert.equal(a.queued('s'), 3, 'the refused message was not queued');
  assert.equal(demands.length, 1);
  assert.equal(a.queued('other'), 0);
  const other = a.wait('other'); // the bound is per service
  assert.equal(demands.length, 2);
  a.release('s');
  a.release('other');
  await Promise.all([...waiting, other]);
  assert.equal(a.stats().totals['queue-full'], 1);
});

test('a message that waits longer than timeoutMs gets timeout; the outstanding demand stays single', async () => {
  const timers = fakeTimers();
  const demands: Demand[] = [];
  const a = createActivator({ queueDepth: 10, timeoutMs: 1000, timers, onDemand: (d) => demands.push(d) });
  const first = a.wait('s');
  timers.advance(600);
  const second = a.wait('s');
  timers.advance(400);
  assert.equal(await reasonOf(first), 'timeout');
  assert.equal(a.queued('s'), 1);
  timers.advance(599);
  a.release('s');
  await second; // the second had time left and was released
  assert.equal(demands.length, 1, 'a timeout does not ask for another deployment');
});

test('timeouts leave the deployment outstanding: a later message makes no second demand', async () => {
  const timers = fakeTimers();
  const demands: Demand[] = [];
  const a = createActivator({ queueDepth: 10, timeoutMs: 100, timers, onDemand: (d) => demands.push(d) });
  const p = a.wait('s');
  timers.advance(100);
  assert.equal(await reasonOf(p), 'timeout');
  const q = a.wait('s');
  assert.equal(demands.length, 1);
  a.release('s');
  await q;
});

test('fail() rejects every waiting message at once with the reason; the next message demands again', async () => {
  const timers = fakeTimers();
  const demands: Demand[] = [];
  const a = createActivator({ queueDepth: 10, timeoutMs: 1000, timers, onDemand: (d) => demands.push(d) });
  const waits = [a.wait('s'), a.wait('s'), a.wait('s')];
  const errors: unknown[] = [];
  waits.forEach((w) => w.catch((e: unknown) => errors.push(e)));
  a.fail('s', 'host h1: image pull failed');
  await flush();
  assert.equal(errors.length, 3);
  for (const e of errors) {
    assert.ok(isActivatorError(e));
    assert.equal(e.reason, 'deploy-failed');
    assert.equal(e.deployError, 'host h1: image pull failed');
    assert.match(e.message, /deployment failed: host h1: image pull failed/);
    assert.deepEqual(e.detail, { reason: 'deploy-failed', service: 's', deployError: 'host h1: image pull failed' });
  }
  assert.equal(timers.pending(), 0);
  assert.equal(a.queued('s'), 0);
  assert.deepEqual(a.stats().services, [], 'nothing kept for a service with nothing pending');
  const again = a.wait('s');
  assert.deepEqual(demands.map((d) => d.reason), ['cold', 'cold']);
  a.release('s');
  await again;
  a.fail('unknown', 'x'); // nothing to fail: no throw
});

test('an aborted signal removes its message from the queue; the others keep their order', async () => {
  const timers = fakeTimers();
  const demands: Demand[] = [];
  const a = createActivator({ queueDepth: 10, timeoutMs: 1000, timers, onDemand: (d) => demands.push(d) });
  const ac = new AbortController();
  const order: string[] = [];
  const w1 = a.wait('s').then(() => order.push('w1'));
  const w2 = a.wait('s', ac.signal);
  const w3 = a.wait('s').then(() => order.push('w3'));
  assert.equal(getEventListeners(ac.signal, 'abort').length, 1);
  ac.abort();
  assert.equal(await reasonOf(w2), 'aborted');
  assert.equal(a.queued('s'), 2);
  a.release('s');
  await Promise.all([w1, w3]);
  assert.deepEqual(order, ['w1', 'w3']);

  const done = new AbortController();
  const w4 = a.wait('t', done.signal);
  a.release('t');
  await w4;
  assert.equal(getEventListeners(done.signal, 'abort').length, 0, 'the abort listener is removed on release');

  const before = demands.length;
  assert.equal(await reasonOf(a.wait('u', AbortSignal.abort())), 'aborted');
  assert.equal(demands.length, before, 'an already aborted message makes no demand');
  assert.equal(a.queued('u'), 0);
});

test('release with nothing waiting keeps nothing; the next message after a release is cold again', async () => {
  const timers = fakeTimers();
  const demands: Demand[] = [];
  const a = createActivator({ queueDepth: 10, timeoutMs: 1000, timers, onDemand: (d) => demands.push(d) });
  a.release('s'); // nobody waits: nothing to remember (the routing table holds the endpoints)
  assert.deepEqual(a.stats().services, []);
  const p = a.wait('s');
  assert.deepEqual(demands, [{ service: 's', queued: 1, reason: 'cold' }]);
  a.release('other'); // another service's endpoints release nothing here
  assert.equal(a.queued('s'), 1);
  a.release('s');
  await p;
  assert.equal(a.queued('s'), 0);
  // The router waits only when the table has no endpoint: such a wait is a new cold demand.
  const q = a.wait('s');
  assert.deepEqual(demands.map((d) => d.reason), ['cold', 'cold']);
  a.release('s');
  await q;
  assert.equal(timers.pending(), 0);
});

test('with several deploys allowed, a queue past each deploy’s share makes a scale demand, up to the limit', () => {
  const demands: Demand[] = [];
  const a = createActivator({
    queueDepth: 10,
    timeoutMs: 1000,
    maxConcurrentDeploysPerService: 2,
    timers: fakeTimers(),
    onDemand: (d) => demands.push(d),
  });
  for (let i = 0; i < 10; i++) void a.wait('s').catch(() => {});
  assert.deepEqual(demands, [
    { service: 's', queued: 1, reason: 'cold' },
    { service: 's', queued: 6, reason: 'scale' },
  ]);
  assert.equal(a.stats().services[0]?.deploying, 2);
  a.close();
});

test('a listener may answer synchronously; unsubscribed listeners hear nothing', async () => {
  const a = createActivator({ queueDepth: 10, timeoutMs: 1000, timers: fakeTimers() });
  const heard: string[] = [];
  const off = a.onDemand((d) => heard.push(d.service));
  const stop = a.onDemand((d) => a.release(d.service));
  await a.wait('s'); // released by the listener, synchronously
  off();
  stop();
  a.release('s');
  const p = a.wait('s');
  assert.deepEqual(heard, ['s']);
  a.fail('s', 'test over');
  assert.equal(await reasonOf(p), 'deploy-failed');
});

test('close() rejects waiting messages and refuses new ones', async () => {
  const timers = fakeTimers();
  const a = createActivator({ queueDepth: 10, timeoutMs: 1000, timers });
  const p = a.wait('s');
  a.close();
  assert.equal(await reasonOf(p), 'aborted');
  assert.equal(await reasonOf(a.wait('s')), 'aborted');
  assert.equal(timers.pending(), 0);
  assert.deepEqual(a.stats().totals, { released: 0, demands: 1, 'queue-full': 0, timeout: 0, 'deploy-failed': 0, aborted: 2 });
});

test('options are checked, naming the field', () => {
  const cases: Array<[Parameters<typeof createActivator>[0], string]> = [
    [{ queueDepth: 0, timeoutMs: 1 }, 'queueDepth'],
    [{ queueDepth: 1.5, timeoutMs: 1 }, 'queueDepth'],
    [{ queueDepth: 1, timeoutMs: -1 }, 'timeoutMs'],
    [{ queueDepth: 1, timeoutMs: 1, maxConcurrentDeploysPerService: 0 }, 'maxConcurrentDeploysPerService'],
  ];
  for (const [opts, field] of cases) {
    assert.throws(() => createActivator(opts), (e: unknown) => (e as { field?: string }).field === field, field);
  }
});

test('the default timers time out for real', async () => {
  const a = createActivator({ queueDepth: 1, timeoutMs: 20 });
  const started = performance.now();
  assert.equal(await reasonOf(a.wait('s')), 'timeout');
  assert.ok(performance.now() - started >= 15);
});

test('after a deployment became ready and then went away (scale to zero, crash), the next message demands again', async () => {
  const demands: Demand[] = [];
  const a = createActivator({ queueDepth: 10, timeoutMs: 1000, timers: fakeTimers(), onDemand: (d) => demands.push(d) });
  const p = a.wait('s');
  a.release('s');
  await p;
  a.release('s');
  assert.deepEqual(a.stats().services, [], 'idle and empty: forgotten');
  const q = a.wait('s');
  assert.deepEqual(demands.map((d) => d.reason), ['cold', 'cold']);
  a.release('s');
  await q;
});
