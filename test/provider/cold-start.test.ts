// The cold-start state machine alone: scripted attempts, a virtual clock, and the
// failures the waiting messages hear. No hosts, registry or real time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createColdStart, type AttemptResult } from '../../src/provider/cold-start.ts';
import type { DeploymentRecord } from '../../src/provider/registry/index.ts';

type Step = AttemptResult | Error;

const ready: AttemptResult = { ready: 1, errors: [], failedHosts: [] };
const failedOn = (host: string, why = 'exit code 3'): AttemptResult => ({ ready: 0, errors: [`${host}: ${why}`], failedHosts: [host] });
const noHost = (why = "no host can run 'echo'"): AttemptResult => ({ ready: 0, errors: [why], failedHosts: [], noHost: why });
const deferredTo = (state: DeploymentRecord['state']): AttemptResult => ({
  ready: 0,
  errors: [],
  failedHosts: [],
  deferred: { id: 'd-other', service: 'echo', version: '1', state, claimedBy: 'other' } as DeploymentRecord,
});

function setup(steps: Step[], o: { follow?: boolean[]; queued?: number; exists?: () => boolean; hasEndpoints?: boolean } = {}) {
  let now = 1_000_000;
  const sleeps: number[] = [];
  const attempts: Array<{ mode: string; exclude: string[] }> = [];
  const failures: string[] = [];
  const follows: Array<{ record: string; deadline: number }> = [];
  const logged: string[] = [];
  const cold = createColdStart({
    maxAttempts: 3,
    backoffMs: 250,
    cooldownMs: 10_000,
    followMs: 90_000,
    watchIntervalMs: 50,
    clock: {
      now: () => now,
      // Virtual time: a sleep passes at once and moves the clock.
      sleep: async (ms) => {
        sleeps.push(ms);
        now += ms;
      },
    },
    attempt: async (_service, mode, exclude) => {
      attempts.push({ mode, exclude: [...exclude] });
      const step = steps.shift();
      if (step === undefined) throw new Error('test script ran out of steps');
      if (step instanceof Error) throw step;
      return step;
    },
    follow: async (record, deadline) => {
      follows.push({ record: record.id, deadline });
      return o.follow?.shift() ?? false;
    },
    fail: (_service, reason) => failures.push(reason),
    queued: () => o.queued ?? 0,
    exists: o.exists ?? (() => true),
    hasEndpoints: () => o.hasEndpoints ?? false,
    log: { info: (_o, m) => logged.push(`info ${m}`), warn: (_o, m) => logged.push(`warn ${m}`), error: (_o, m) => logged.push(`error ${m}`) },
  });
  /** Demand a cold start and wait until the run is over. */
  async function demand(): Promise<void> {
    cold.onDemand({ service: 'echo', queued: 1, reason: 'cold' });
    while (cold.busy('echo')) await new Promise((r) => setImmediate(r));
  }
  return { cold, demand, sleeps, attempts, failures, follows, logged, advance: (ms: number) => (now += ms), now: () => now };
}

test('ready at the first attempt: nothing fails, nothing sleeps', async () => {
  const s = setup([ready]);
  await s.demand();
  assert.deepEqual(s.attempts, [{ mode: 'cold', exclude: [] }]);
  assert.deepEqual(s.failures, []);
  assert.deepEqual(s.sleeps, []);
});

test('a failed host: the waiting messages hear why, and the next attempt goes elsewhere after a doubling backoff', async () => {
  const s = setup([failedOn('h1'), failedOn('h2'), ready]);
  await s.demand();
  assert.deepEqual(s.attempts.map((a) => a.exclude), [[], ['h1'], ['h1', 'h2']]);
  assert.deepEqual(s.sleeps, [250, 500]);
  assert.deepEqual(s.failures, ['h1: exit code 3 (retrying on another host in 250 ms)', 'h2: exit code 3 (retrying on another host in 500 ms)']);
});

test('after maxAttempts the service cools down: demands fail fast until the cooldown ends', async () => {
  const s = setup([failedOn('h1'), failedOn('h2'), failedOn('h3', 'pull failed'), ready]);
  await s.demand();
  assert.equal(s.attempts.length, 3);
  assert.equal(s.failures.at(-1), 'h3: pull failed', 'the last failure has no retry note');
  await s.demand();
  assert.equal(s.attempts.length, 3, 'no attempt during the cooldown');
  assert.equal(s.failures.at(-1), 'h3: pull failed (deployment paused for 10 s after 3 failed attempts)');
  s.advance(10_000);
  await s.demand();
  assert.equal(s.attempts.length, 4, 'the cooldown is over: a new attempt');
  assert.deepEqual(s.attempts.at(-1)!.exclude, [], 'with a fresh exclusion list');
});

test('reset forgets a cooldown (a host was added, the service changed)', async () => {
  const s = setup([failedOn('h1'), failedOn('h1'), failedOn('h1'), ready]);
  await s.demand();
  s.cold.reset('other');
  await s.demand();
  assert.equal(s.attempts.length, 3, 'resetting another service changes nothing');
  s.cold.reset('echo');
  await s.demand();
  assert.equal(s.attempts.length, 4);
});

test('no host can take it: fail at once, no retry, and cool down', async () => {
  const s = setup([noHost()]);
  await s.demand();
  assert.equal(s.attempts.length, 1);
  assert.deepEqual(s.failures, ["no host can run 'echo'"]);
  await s.demand();
  assert.match(s.failures.at(-1)!, /paused/);
});

test('no host left after failures: every host is tried once more before giving up', async () => {
  const s = setup([failedOn('h1'), noHost(), ready]);
  await s.demand();
  assert.deepEqual(s.attempts.map((a) => a.exclude), [[], ['h1'], []]);
  assert.deepEqual(s.sleeps, [250], 'no second backoff: the last one has passed');
});

test('another provider holds the slot: follow it until the deadline; routed means done', async () => {
  const s = setup([deferredTo('deploying')], { follow: [true] });
  await s.demand();
  assert.deepEqual(s.follows, [{ record: 'd-other', deadline: s.now() + 90_000 }]);
  assert.equal(s.attempts.length, 1);
  assert.deepEqual(s.failures, []);
});

test("a followed deployment that failed: claim again, uncounted; a ready one that proved unusable: claim in 'add' mode", async () => {
  const s = setup([deferredTo('deploying'), deferredTo('ready'), ready], { follow: [false, false] });
  await s.demand();
  assert.deepEqual(s.attempts.map((a) => a.mode), ['cold', 'cold', 'add']);
  assert.deepEqual(s.sleeps, [50, 50], 'a short pause between follows, no backoff');
  assert.deepEqual(s.failures, []);
});

test('a provider that keeps the slot without a result is given up on after maxAttempts × 4 follows', async () => {
  const s = setup(Array.from({ length: 20 }, () => deferredTo('deploying')));
  await s.demand();
  assert.equal(s.follows.length, 13);
  assert.deepEqual(s.failures, ['other providers keep holding the deployment slot without a usable result']);
});

test('a provider error (the registry failed) is logged, answered and counted as an attempt', async () => {
  const s = setup([new Error('database is locked'), ready]);
  await s.demand();
  assert.deepEqual(s.failures, ['database is locked']);
  assert.deepEqual(s.sleeps, [250]);
  assert.ok(s.logged.includes('error deployment attempt failed'));
});

test('a removed service ends the run: its waiting messages hear so', async () => {
  const s = setup([], { exists: () => false });
  await s.demand();
  assert.deepEqual(s.attempts, []);
  assert.deepEqual(s.failures, ['service echo was removed']);
});

test('one run per service: a demand during a run is absorbed', async () => {
  let release: (r: AttemptResult) => void = () => {};
  const held = new Promise<AttemptResult>((r) => (release = r));
  let calls = 0;
  const cold = createColdStart({
    attempt: () => {
      calls++;
      return held;
    },
    follow: async () => false,
    fail: () => {},
    queued: () => 0,
    exists: () => true,
    hasEndpoints: () => true,
    log: { info() {}, warn() {}, error() {} },
  });
  cold.onDemand({ service: 'echo', queued: 1, reason: 'cold' });
  cold.onDemand({ service: 'echo', queued: 2, reason: 'cold' });
  assert.equal(cold.busy('echo'), true);
  assert.equal(cold.busy('other'), false);
  assert.equal(calls, 1);
  release(ready);
  await cold.close();
  assert.equal(cold.busy('echo'), false);
});

test('messages still queued when a run ends without endpoints hear the reason', async () => {
  const s = setup([noHost('nothing fits')], { queued: 2, hasEndpoints: false });
  await s.demand();
  assert.deepEqual(s.failures, ['nothing fits', 'nothing fits']);
});

test('close stops a run sleeping in its backoff', async () => {
  let aborted = false;
  let attempts = 0;
  const cold = createColdStart({
    backoffMs: 60_000,
    attempt: async () => {
      attempts++;
      return failedOn('h1');
    },
    follow: async () => false,
    fail: () => {},
    queued: () => 0,
    exists: () => true,
    hasEndpoints: () => false,
    log: { info() {}, warn() {}, error() {} },
    clock: {
      now: () => 0,
      sleep: (_ms, signal) =>
        new Promise((resolve) =>
          signal.addEventListener('abort', () => {
            aborted = true;
            resolve();
          }),
        ),
    },
  });
  cold.onDemand({ service: 'echo', queued: 1, reason: 'cold' });
  await new Promise((r) => setImmediate(r));
  await cold.close();
  assert.equal(aborted, true);
  assert.equal(attempts, 1);
  assert.equal(cold.busy('echo'), false);
});
