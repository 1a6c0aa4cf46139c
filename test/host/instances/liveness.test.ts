import { describe, it, test } from 'node:test';
import assert from 'node:assert/strict';
import { createLiveness, diedWithin, exitedWithin, type LivenessTarget } from '../../../src/host/instances/liveness.ts';
import { silentLogger } from '../../../src/host/ports.ts';

function harness(answers: Record<string, Array<number | Error>>, opts: { failures?: number } = {}) {
  const targets: LivenessTarget[] = Object.keys(answers).map((id) => ({ id, socketPath: `/s/${id}`, path: '/healthz' }));
  const probes: string[] = [];
  const verdicts: Array<{ id: string; why: string }> = [];
  const liveness = createLiveness({
    targets: () => targets,
    probe: async (socketPath) => {
      const id = socketPath.slice(3);
      probes.push(id);
      const next = answers[id]!.shift() ?? 200;
      if (next instanceof Error) throw next;
      return next;
    },
    onUnresponsive: (id, why) => verdicts.push({ id, why }),
    log: silentLogger,
    periodMs: 0,
    retryMs: 1,
    ...(opts.failures === undefined ? {} : { failures: opts.failures }),
  });
  return { liveness, probes, verdicts, targets };
}

describe('liveness', () => {
  it('an instance that fails every probe of a check is unresponsive; one that answers is not', async () => {
    const h = harness({ deaf: [new Error('connect ECONNREFUSED'), new Error('connect ECONNREFUSED')], fine: [200] });
    await h.liveness.tick();
    assert.deepEqual(h.verdicts.map((v) => v.id), ['deaf']);
    assert.match(h.verdicts[0]!.why, /2 probes failed .*ECONNREFUSED/);
    await h.liveness.close();
  });

  it('one failed probe followed by an answer is no verdict (a blip)', async () => {
    const h = harness({ blip: [new Error('no answer within 2000 ms'), 200] });
    await h.liveness.tick();
    assert.deepEqual(h.verdicts, []);
    assert.deepEqual(h.probes, ['blip', 'blip']);
    await h.liveness.close();
  });

  it('a status other than 200 counts as a failure', async () => {
    const h = harness({ sick: [503, 500, 503] }, { failures: 3 });
    await h.liveness.tick();
    assert.deepEqual(h.verdicts.map((v) => v.id), ['sick']);
    assert.match(h.verdicts[0]!.why, /answered 503/);
    await h.liveness.close();
  });

  it('suspect checks at once, only one check at a time, and only instances still targeted', async () => {
    const h = harness({ a: [new Error('refused'), new Error('refused')] });
    h.liveness.suspect('a');
    h.liveness.suspect('a'); // joins the check under way
    h.liveness.suspect('nobody');
    await h.liveness.tick(); // joins the check under way too
    assert.deepEqual(h.probes, ['a', 'a']);
    assert.deepEqual(h.verdicts.map((v) => v.id), ['a']);
    await h.liveness.close();
  });

  it('no verdict for an instance that stopped being a target while it was checked (paused, removed)', async () => {
    const h = harness({ gone: [new Error('refused'), new Error('refused')] });
    const check = h.liveness.tick();
    h.targets.length = 0;
    await check;
    assert.deepEqual(h.verdicts, []);
    await h.liveness.close();
  });
});

test('exitedWithin: an exit reported in time is a crash for the exit handler, silence is not', async () => {
  const running = (exited: Promise<never> | Promise<{ reason: 'exited' }>) => ({ id: 'i', pid: 1, exited, stop: async () => {}, stats: async () => ({ memoryBytes: undefined, cpuUsageNanos: undefined, pids: undefined }) }) as never;
  assert.equal(await exitedWithin(running(new Promise((r) => setTimeout(() => r({ reason: 'exited' }), 20))), 500), true);
  assert.equal(await exitedWithin(running(new Promise(() => {})), 50), false);
});

test('diedWithin: a process still running answers at once; a dead pid waits for the exit report', { timeout: 60_000 }, async () => {
  const never = new Promise<never>(() => {});
  const alive = { id: 'i', pid: process.pid, exited: never, stop: async () => {}, stats: async () => ({ memoryBytes: undefined, cpuUsageNanos: undefined, pids: undefined }) } as never;
  // With an exit report that never comes and a ten-minute wait, only a running process answers.
  assert.equal(await diedWithin(alive, 600_000), false);
  const gone = { id: 'j', pid: 2 ** 22 + 7, exited: Promise.resolve({ reason: 'exited' }), stop: async () => {}, stats: async () => ({ memoryBytes: undefined, cpuUsageNanos: undefined, pids: undefined }) } as never;
  assert.equal(await diedWithin(gone, 5000), true);
});
