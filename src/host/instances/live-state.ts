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

/**
 * Messages held after a snapshot taken for a migration: they stay held until the instance
 * is removed (then they are answered `gone`, which callers such as the provider's router
 * retry elsewhere: nothing was delivered) or released (the move was given up), or until
 * the hold expires.
 */
export function createHolds(holdMs = 30_000) {
  const held = new Map<string, { release: () => void; timer: NodeJS.Timeout }>();
  return {
    keep(id: string, release: () => void): void {
      const timer = setTimeout(() => this.release(id), holdMs);
      timer.unref();
      held.set(id, { release, timer });
    },
    has: (id: string): boolean => held.has(id),
    release(id: string): boolean {
      const h = held.get(id);
      if (!h) return false;
      held.delete(id);
      clearTimeout(h.timer);
      h.release();
      return true;
    },
    releaseAll(): void {
      for (const id of [...held.keys()]) this.release(id);
    },
  };
}
export type Holds = ReturnType<typeof createHolds>;

export async function snapshotInstance(deps: LiveStateDeps, id: string, options: { hold?: Holds } = {}): Promise<SnapshotResult> {
  const l = deps.store.get(id);
  const running = l.running;
  if (!running || !canCapture(running)) throw notSupported(`instance ${id} runs on driver ${l.driver.name}, which cannot capture its state`);
  if (l.record.state !== 'ready') throw new ShoalError('conflict', `instance ${id} is ${l.record.state}, not ready`, { field: 'id' });
  if (!deps.states) throw notSupported('this host has no state store');
  const dir = l.paths.stateDir;
  await mkdir(dir, { recursive: true });
  if (options.hold?.has(id)) throw new ShoalError('conflict', `instance ${id} is held for a move already`, { field: 'id' });
  const release = await deps.quiesce(id, QUIESCE_TIMEOUT_MS);
  let state;
  try {
    state = await running.capture(dir);
  } catch (e) {
    release();
    throw e;
  }
  // For a move, messages stay held until the instance is removed (or the hold ends).
  if (options.hold) options.hold.keep(id, release);
  else release();
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
