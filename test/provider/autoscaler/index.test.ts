import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  desiredReplicas,
  type ScaleConfig,
  type ScaleDecision,
  type ScaleMetrics,
  type ScaleSample,
} from '../../../src/provider/autoscaler/index.ts';

const NOW = 1_000_000;
const base: ScaleConfig = { min: 0, max: 10, targetConcurrency: 10, idleTimeoutMs: 60_000, stableWindowMs: 0 };
const m = (o: Partial<ScaleMetrics>): ScaleMetrics => ({ inFlight: 0, ready: 1, pending: 0, lastRequestAt: NOW - 1000, ...o });

test('desiredReplicas without damping (stable window 0): the load rule, min, max and idle', () => {
  const cases: Array<{
    name: string;
    metrics: ScaleMetrics;
    config?: Partial<ScaleConfig>;
    want: number;
    direction: ScaleDecision['direction'];
    reason?: RegExp;
  }> = [
    { name: 'first message to a cold service', metrics: m({ inFlight: 1, ready: 0 }), want: 1, direction: 'up' },
    { name: '25 in flight at target 10', metrics: m({ inFlight: 25 }), want: 3, direction: 'up', reason: /scale up 1 → 3: 25 in flight, target 10/ },
    { name: 'exactly at target', metrics: m({ inFlight: 10 }), want: 1, direction: 'hold' },
    { name: 'just over target', metrics: m({ inFlight: 11 }), want: 2, direction: 'up' },
    { name: 'bounded by max', metrics: m({ inFlight: 1000 }), config: { max: 5 }, want: 5, direction: 'up', reason: /wants 100, capped at max 5/ },
    { name: 'pending instances count', metrics: m({ inFlight: 30, ready: 1, pending: 2 }), want: 3, direction: 'hold' },
    { name: 'fractional target', metrics: m({ inFlight: 3 }), config: { targetConcurrency: 0.5 }, want: 6, direction: 'up' },
    { name: 'load fell: down, one kept warm before the idle timeout', metrics: m({ inFlight: 0, ready: 4 }), want: 1, direction: 'down' },
    { name: 'load fell part way', metrics: m({ inFlight: 12, ready: 4 }), want: 2, direction: 'down' },
    { name: 'quiet but not idle yet: keep one', metrics: m({ inFlight: 0, lastRequestAt: NOW - 59_999 }), want: 1, direction: 'hold' },
    {
      name: 'idle: to zero',
      metrics: m({ inFlight: 0, lastRequestAt: NOW - 60_000 }),
      want: 0,
      direction: 'down',
      reason: /idle \(no message for 60000 ms, timeout 60000 ms\)/,
    },
    { name: 'idle with min 2: to min', metrics: m({ inFlight: 0, ready: 5, lastRequestAt: NOW - 90_000 }), config: { min: 2 }, want: 2, direction: 'down' },
    {
      name: 'idle but a message in flight: never below 1',
      metrics: m({ inFlight: 1, lastRequestAt: NOW - 600_000 }),
      want: 1,
      direction: 'hold',
    },
    { name: 'never had a message, nothing running', metrics: m({ ready: 0, lastRequestAt: undefined }), want: 0, direction: 'hold' },
    { name: 'never had a message, one running: idle', metrics: m({ ready: 1, lastRequestAt: undefined }), want: 0, direction: 'down', reason: /no message yet/ },
    { name: 'below min: up to min', metrics: m({ ready: 0 }), config: { min: 2 }, want: 2, direction: 'up', reason: /below min 2/ },
    { name: 'min with load above it', metrics: m({ inFlight: 45, ready: 2 }), config: { min: 2 }, want: 5, direction: 'up' },
    { name: 'max lowered under the running count', metrics: m({ inFlight: 80, ready: 8 }), config: { max: 3 }, want: 3, direction: 'down' },
    { name: 'idle timeout 0 with nothing in flight', metrics: m({ lastRequestAt: NOW }), config: { idleTimeoutMs: 0 }, want: 0, direction: 'down' },
  ];
  for (const c of cases) {
    const d = desiredReplicas(c.metrics, { ...base, ...c.config }, NOW);
    assert.equal(d.replicas, c.want, `${c.name}: ${d.reason}`);
    assert.equal(d.direction, c.direction, c.name);
    if (c.reason !== undefined) assert.match(d.reason, c.reason, c.name);
  }
});

/** Runs the autoscaler on a 2 s tick over a load curve, applying each decision at once. */
function simulate(config: ScaleConfig, load: (t: number) => number, untilMs: number, start = 1) {
  let history: ScaleSample[] = [];
  let replicas = start;
  let lastRequestAt: number | undefined = 0;
  const trace: Array<{ t: number; replicas: number; decision: ScaleDecision }> = [];
  for (let t = 0; t <= untilMs; t += 2000) {
    const inFlight = load(t);
    if (inFlight > 0) lastRequestAt = t;
    const d = desiredReplicas({ inFlight, ready: replicas, pending: 0, lastRequestAt }, config, t, history);
    history = d.history;
    replicas = d.replicas;
    trace.push({ t, replicas, decision: d });
  }
  return trace;
}

const at = (trace: ReturnType<typeof simulate>, t: number) => trace.find((x) => x.t === t)!.replicas;

test('scale up is immediate; scale down waits for a full stable window of lower demand; zero after the idle timeout', () => {
  const config: ScaleConfig = { min: 0, max: 10, targetConcurrency: 10, idleTimeoutMs: 60_000, stableWindowMs: 30_000 };
  // 100 in flight for 10 s, then 15 until 50 s, then nothing.
  const trace = simulate(config, (t) => (t < 10_000 ? 100 : t < 50_000 ? 15 : 0), 140_000);
  assert.equal(at(trace, 0), 10, 'up at once');
  assert.equal(at(trace, 10_000), 10, 'load fell at 10 s: hold');
  assert.equal(at(trace, 38_000), 10, 'still within 30 s of the last 10');
  assert.equal(at(trace, 40_000), 2, 'a whole window wanting 2 → 2');
  assert.equal(at(trace, 50_000), 2, 'no load since 50 s: keep one warm only after a window');
  assert.equal(at(trace, 78_000), 2);
  assert.equal(at(trace, 80_000), 1);
  assert.equal(at(trace, 106_000), 1, 'last message at 48 s: not idle yet at 106 s');
  assert.equal(at(trace, 108_000), 0, 'idle 60 s after the last message → zero');
  assert.match(trace.find((x) => x.t === 38_000)!.decision.reason, /10 wanted within the last 30000 ms/);
  assert.match(trace.find((x) => x.t === 40_000)!.decision.reason, /scale down 10 → 2/);
});

test('a load that oscillates faster than the window does not flap', () => {
  const config: ScaleConfig = { min: 0, max: 20, targetConcurrency: 10, idleTimeoutMs: 60_000, stableWindowMs: 30_000 };
  const trace = simulate(config, (t) => (Math.floor(t / 8000) % 2 === 0 ? 50 : 5), 300_000);
  const counts = trace.map((x) => x.replicas);
  assert.equal(counts[0], 5);
  assert.ok(counts.every((n) => n === 5), `flapped: ${counts.join(',')}`);
});

test('without damping the same load would flap (so the previous test proves the window works)', () => {
  const config: ScaleConfig = { min: 0, max: 20, targetConcurrency: 10, idleTimeoutMs: 60_000, stableWindowMs: 0 };
  const trace = simulate(config, (t) => (Math.floor(t / 8000) % 2 === 0 ? 50 : 5), 60_000);
  assert.ok(new Set(trace.map((x) => x.replicas)).size > 1);
});

test('no history (or too short a one) never scales down on load, only on idle', () => {
  const config: ScaleConfig = { ...base, stableWindowMs: 30_000 };
  const d = desiredReplicas(m({ inFlight: 5, ready: 6 }), config, NOW);
  assert.equal(d.replicas, 6);
  assert.equal(d.direction, 'hold');
  assert.match(d.reason, /not yet for the 30000 ms stable window/);
  const short: ScaleSample[] = [{ at: NOW - 20_000, replicas: 1 }];
  assert.equal(desiredReplicas(m({ inFlight: 5, ready: 6 }), config, NOW, short).replicas, 6);
  const covered: ScaleSample[] = [{ at: NOW - 31_000, replicas: 9 }, { at: NOW - 20_000, replicas: 1 }];
  assert.equal(desiredReplicas(m({ inFlight: 5, ready: 6 }), config, NOW, covered).replicas, 1, 'the sample before the window only proves coverage');
  const idle = desiredReplicas(m({ inFlight: 0, ready: 6, lastRequestAt: NOW - 60_000 }), config, NOW);
  assert.equal(idle.replicas, 0);
  const longRequests = desiredReplicas(m({ inFlight: 12, ready: 4, lastRequestAt: NOW - 600_000 }), config, NOW);
  assert.equal(longRequests.replicas, 4, 'messages still in flight: not idle, so the window applies');
});

test('the history stays small however often the autoscaler runs, and is not mutated', () => {
  const config: ScaleConfig = { ...base, stableWindowMs: 30_000 };
  let history: ScaleSample[] = [];
  for (let t = 0; t < 120_000; t += 10) {
    const given = history;
    const frozen = JSON.stringify(given);
    history = desiredReplicas(m({ inFlight: (t / 10) % 37, lastRequestAt: t }), config, t, history).history;
    assert.equal(JSON.stringify(given), frozen);
  }
  assert.ok(history.length <= 66, `history has ${history.length} samples`);
  assert.ok(history[0]!.at < 120_000 - 30_000, 'keeps one sample before the window');
  assert.ok(history.slice(1).every((s) => s.at >= 120_000 - 10 - 30_000));
});

test('a merged sample keeps the highest recommendation, so a short spike still holds the count', () => {
  const config: ScaleConfig = { ...base, stableWindowMs: 64_000 }; // merge gap 1 s
  let history: ScaleSample[] = [{ at: 0, replicas: 1 }];
  history = desiredReplicas(m({ inFlight: 90, ready: 1 }), config, 100_000, history).history; // spike: 9
  history = desiredReplicas(m({ inFlight: 5, ready: 9 }), config, 100_500, history).history; // merged into the spike
  assert.deepEqual(history.at(-1), { at: 100_000, replicas: 9 });
  const d = desiredReplicas(m({ inFlight: 5, ready: 9 }), config, 150_000, history);
  assert.equal(d.replicas, 9, d.reason);
});

test('bad configs are bugs: refused naming the field', () => {
  const cases: Array<[Partial<ScaleConfig>, string]> = [
    [{ min: -1 }, 'scaling.min'],
    [{ min: 1.5 }, 'scaling.min'],
    [{ max: 0 }, 'scaling.max'],
    [{ min: 4, max: 3 }, 'scaling.max'],
    [{ targetConcurrency: 0 }, 'scaling.targetConcurrency'],
    [{ targetConcurrency: Number.NaN }, 'scaling.targetConcurrency'],
    [{ idleTimeoutMs: -5 }, 'scaling.idleTimeoutMs'],
    [{ stableWindowMs: -1 }, 'scaling.stableWindowMs'],
  ];
  for (const [bad, field] of cases) {
    assert.throws(
      () => desiredReplicas(m({}), { ...base, ...bad }, NOW),
      (e: unknown) => (e as { code?: string }).code === 'invalid' && (e as { field?: string }).field === field,
      field,
    );
  }
});
