// A deployment's timeline as the provider records it.
import type { DeploymentTimeline, TimelinePhase } from '../protocol/index.ts';

/** When a demand arrived: the timeline's zero. */
export interface Timing {
  /** performance.now() at the demand. */
  t0: number;
  /** Epoch ms at t0. */
  epoch: number;
}

/**
 * The deployment's timeline from the provider's side: queue (demand → placement),
 * place (resolve, place, claim), then the host's own phases shifted to when the plan
 * was sent (the provider's clock, so hosts with skewed clocks still line up).
 */
export function providerTimeline(timing: Timing, placeStart: number, sendMs: number, readyMs: number, host: DeploymentTimeline): DeploymentTimeline {
  const phases: TimelinePhase[] = [
    { name: 'queue', startMs: 0, endMs: round(placeStart) },
    { name: 'place', startMs: round(placeStart), endMs: round(sendMs) },
    ...host.phases.map((p) => ({ name: p.name, startMs: round(sendMs + p.startMs), endMs: round(sendMs + p.endMs) })),
  ];
  return { startedAt: timing.epoch, phases, pull: host.pull, totalMs: round(readyMs) };
}

/** The timeline with its first reply (at `endMs` after the demand) appended. */
export function withFirstReply(timeline: DeploymentTimeline, readyMs: number, endMs: number): DeploymentTimeline {
  return {
    ...timeline,
    phases: [...timeline.phases, { name: 'first-reply', startMs: round(readyMs), endMs: round(Math.max(endMs, readyMs)) }],
    totalMs: round(Math.max(endMs, readyMs)),
  };
}

export function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
