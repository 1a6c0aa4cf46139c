// Live state on this host (issue 13): snapshot and fork of a running instance whose driver
// can capture. A snapshot quiesces the instance at the forwarder (new messages held, none
// in flight), captures, lets the held messages go, and stores the state as an artifact.
import { mkdir, rm } from 'node:fs/promises';
import { canCapture, canFork } from '../drivers/driver.ts';
import type { StateStore } from '../state-store.ts';
import type { InstanceStore } from './instance-store.ts';
import { ShoalError, type DeploymentPlan, type DeploymentResult, type Digest } from '../../protocol/index.ts';
import type { Origin } from './deploy.ts';

const QUIESCE_TIMEOUT_MS = 10_000;

export interface LiveStateDeps {
  store: Pick<InstanceStore, 'get'>;
  states: Pick<StateStore, 'push'> | undefined;
  /** Holds new messages to the instance and waits until none is in flight; the result lets them go. */
  quiesce(id: string, timeoutMs: number): Promise<() => void>;
  deploy(plan: DeploymentPlan, origin?: Origin): Promise<DeploymentResult>;
}

export interface SnapshotResult {
  id: string;
  digest: Digest;
  /** Bytes of the (compressed) state blob. */
  size: number;
  annotations: Record<string, string>;
}

function notSupported(message: string): ShoalError {
  return new ShoalError('unsupported', message, { field: 'id', detail: { reason: 'not-supported' } });
}

export async function snapshotInstance(deps: LiveStateDeps, id: string): Promise<SnapshotResult> {
  const l = deps.store.get(id);
  const running = l.running;
  if (!running || !canCapture(running)) throw notSupported(`instance ${id} runs on driver ${l.driver.name}, which cannot capture its state`);
  if (l.record.state !== 'ready') throw new ShoalError('conflict', `instance ${id} is ${l.record.state}, not ready`, { field: 'id' });
  if (!deps.states) throw notSupported('this host has no state store');
  const dir = l.paths.stateDir;
  await mkdir(dir, { recursive: true });
  const release = await deps.quiesce(id, QUIESCE_TIMEOUT_MS);
  let state;
  try {
    state = await running.capture(dir);
  } finally {
    release();
  }
  try {
    const plan = l.record.plan;
    const annotations = { 'dev.shoal.image': plan.image, 'dev.shoal.service': `${plan.service.name}@${plan.service.version}`, 'dev.shoal.instance': id };
    const pushed = await deps.states.push(plan.store, plan.image, state, annotations);
    return { id, digest: pushed.digest, size: pushed.size, annotations: { ...state.annotations, ...annotations } };
  } finally {
    await rm(state.file, { force: true });
  }
}

/** A copy of a running instance on this host, from its state now; the source keeps serving. */
export async function forkInstance(deps: LiveStateDeps, id: string): Promise<DeploymentResult> {
  const l = deps.store.get(id);
  if (!l.running || !canFork(l.driver)) throw notSupported(`instance ${id} runs on driver ${l.driver.name}, which cannot fork`);
  if (l.record.state !== 'ready') throw new ShoalError('conflict', `instance ${id} is ${l.record.state}, not ready`, { field: 'id' });
  const { from: _from, ...plan } = l.record.plan;
  // The source is quiesced only while the driver copies its state.
  return deps.deploy({ ...plan, driver: l.driver.name }, { fork: l.running, hold: () => deps.quiesce(id, QUIESCE_TIMEOUT_MS) });
}
