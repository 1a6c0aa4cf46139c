// The autoscaler: how many instances a service should have, as a pure function of its
// load, its scaling config, the time (passed in) and a short history of its own past
// recommendations (passed in and handed back), so tests drive it with tables.
//
// Up is immediate: ceil(inFlight / targetConcurrency), bounded by max. Down is damped
// (Knative's stable window): the count only falls to the highest recommendation of the
// last `stableWindowMs`, and only once the history covers that whole window, so a
// brief lull does not tear instances down. Zero (or min) comes after `idleTimeoutMs`
// with no request and nothing in flight; the idle timeout is itself the damping there.
import { ShoalError } from '../../protocol/index.ts';

export interface ScaleMetrics {
  /** Messages being handled now, plus those waiting in the activator for this service. */
  inFlight: number;
  /** Instances ready to take messages. */
  ready: number;
  /** Instances being deployed. */
  pending: number;
  /**
   * When the last message arrived (epoch ms); undefined means none since the provider
   * started watching, which counts as idle: pass the watch start time to avoid that.
   */
  lastRequestAt: number | undefined;
}

export interface ScaleConfig {
  min: number;
  max: number;
  /** In-flight messages one instance should carry. */
  targetConcurrency: number;
  /** No message for this long (and none in flight) → scale to min (to zero when min is 0). */
  idleTimeoutMs: number;
  /** How long a lower count must be wanted before scaling down. Default 30 s. */
  stableWindowMs?: number;
}

/** One past recommendation. Keep the `history` a decision returns and pass it to the next call. */
export interface ScaleSample {
  at: number;
  replicas: number;
}

export interface ScaleDecision {
  /** Instances the service should have now (ready + pending). */
  replicas: number;
  direction: 'up' | 'down' | 'hold';
  reason: string;
  /** What the load alone asks for now, before damping. */
  recommendation: number;
  /** The history to pass to the next call (this recommendation added, old samples dropped). */
  history: ScaleSample[];
}

export const defaultStableWindowMs = 30_000;

function check(config: ScaleConfig): number {
  const { min, max, targetConcurrency, idleTimeoutMs } = config;
  const window = config.stableWindowMs ?? defaultStableWindowMs;
  const bad = (field: string, why: string) => new ShoalError('invalid', `scaling.${field} ${why}`, { field: `scaling.${field}` });
  if (!Number.isInteger(min) || min < 0) throw bad('min', `must be an integer ≥ 0, got ${min}`);
  if (!Number.isInteger(max) || max < Math.max(1, min)) throw bad('max', `must be an integer ≥ max(1, min), got ${max}`);
  if (!(targetConcurrency > 0)) throw bad('targetConcurrency', `must be > 0, got ${targetConcurrency}`);
  if (!(idleTimeoutMs >= 0)) throw bad('idleTimeoutMs', `must be ≥ 0, got ${idleTimeoutMs}`);
  if (!(window >= 0)) throw bad('stableWindowMs', `must be ≥ 0, got ${window}`);
  return window;
}

/**
 * Keep the samples inside the window plus the newest one before it (it proves the
 * window is covered). Samples closer together than window/64 are merged, keeping the
 * higher count and the earlier time, so the history stays small however often this runs.
 */
function nextHistory(history: readonly ScaleSample[], sample: ScaleSample, windowMs: number): ScaleSample[] {
  const start = sample.at - windowMs;
  const sorted = [...history].filter((s) => s.at <= sample.at).sort((a, b) => a.at - b.at);
  let anchor: ScaleSample | undefined;
  const inside: ScaleSample[] = [];
  for (const s of sorted) {
    if (s.at < start) anchor = s;
    else inside.push(s);
  }
  const out: ScaleSample[] = anchor === undefined ? [] : [anchor];
  const gap = windowMs / 64;
  for (const s of [...inside, sample]) {
    const last = out[out.length - 1];
    if (last !== undefined && last !== anchor && s.at - last.at < gap) {
      out[out.length - 1] = { at: last.at, replicas: Math.max(last.replicas, s.replicas) };
    } else out.push({ ...s });
  }
  return out;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

export function desiredReplicas(
  metrics: ScaleMetrics,
  config: ScaleConfig,
  now: number,
  history: readonly ScaleSample[] = [],
): ScaleDecision {
  const windowMs = check(config);
  const { min, max, targetConcurrency: target, idleTimeoutMs } = config;
  const inFlight = Math.max(0, metrics.inFlight);
  const current = Math.max(0, metrics.ready) + Math.max(0, metrics.pending);
  const quietMs = metrics.lastRequestAt === undefined ? Infinity : now - metrics.lastRequestAt;
  const idle = inFlight === 0 && quietMs >= idleTimeoutMs;

  // What the load asks for. Before the idle timeout a running service keeps one instance warm.
  const byLoad = inFlight > 0 ? Math.ceil(inFlight / target) : 0;
  const floor = idle ? min : Math.max(min, Math.min(current, 1));
  const recommendation = Math.min(max, Math.max(byLoad, floor));
  const hist = nextHistory(history, { at: now, replicas: recommendation }, windowMs);
  const decide = (replicas: number, direction: ScaleDecision['direction'], reason: string): ScaleDecision => ({
    replicas,
    direction,
    reason,
    recommendation,
    history: hist,
  });

  const loadText = `${inFlight} in flight, target ${target} per instance`;
  if (recommendation > current) {
    const why =
      current < min && byLoad <= min
        ? `below min ${min}`
        : byLoad > max
          ? `${loadText} wants ${byLoad}, capped at max ${max}`
          : loadText;
    return decide(recommendation, 'up', `scale up ${current} → ${recommendation}: ${why}`);
  }
  if (recommendation === current) return decide(current, 'hold', `hold at ${current}: ${loadText}`);

  // Wants fewer. Idle: the idle timeout was the wait, go straight to min.
  if (idle) {
    const quiet = metrics.lastRequestAt === undefined ? 'no message yet' : `no message for ${quietMs} ms`;
    return decide(recommendation, 'down', `scale down ${current} → ${recommendation}: idle (${quiet}, timeout ${idleTimeoutMs} ms)`);
  }
  const covered = hist.some((s) => s.at <= now - windowMs);
  if (!covered) {
    return decide(current, 'hold', `hold at ${current}: ${recommendation} wanted, but not yet for the ${windowMs} ms stable window`);
  }
  const highest = Math.max(...hist.filter((s) => s.at >= now - windowMs).map((s) => s.replicas));
  if (highest >= current) {
    return decide(current, 'hold', `hold at ${current}: ${highest} wanted within the last ${windowMs} ms`);
  }
  return decide(highest, 'down', `scale down ${current} → ${highest}: at most ${plural(highest, 'instance')} wanted for ${windowMs} ms (${loadText})`);
}
