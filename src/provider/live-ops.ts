// Live state as provider operations (issue 15): pause and resume in memory, snapshot to a
// saved state, suspend (save, then free the host), restore a saved state as a new
// instance on any host whose driver took it, fork a running instance. The hosts hold the
// mechanisms (POST /v1/instances/:id/{pause,resume,snapshot,fork}, a plan `from` a
// state); this module is the provider's side: which instance, which host, what the
// registry and the routing table record. Every operation asks the instance's own driver
// (from its host's report) whether it can, and refuses with the capability it lacks.
import { randomUUID } from 'node:crypto';
import { choosePlacements, hostViews, planFor } from './deploy-plan.ts';
import type { Deployer } from './deployer.ts';
import type { HostPool, Logger, PoolHost } from './host-pool.ts';
import type { Registry, SavedStateReason, SavedStateRecord } from './registry/index.ts';
import type { RouteEndpoint, RoutingTable } from './routing-table.ts';
import type { ImageResolver } from '../image/index.ts';
import { ShoalError, type DeploymentResult, type DriverCapabilities } from '../protocol/index.ts';

export interface LiveOpsDeps {
  pool: HostPool;
  table: RoutingTable;
  registry: Registry;
  images: Pick<ImageResolver, 'resolve'>;
  deployer: Pick<Deployer, 'endpointOf'>;
  providerId: string;
  storeUrl(): string;
  readinessTimeoutMs: number;
  log: Logger;
  rand?: () => number;
  now?: () => number;
}

export type LiveCapability = 'canPause' | 'canSnapshot' | 'canClone';

const VERB: Record<LiveCapability, string> = { canPause: 'pause', canSnapshot: 'snapshot', canClone: 'fork' };

/** An instance this provider routes (or holds paused), its host and what its driver can do. */
export interface LocatedInstance {
  endpoint: RouteEndpoint;
  paused: boolean;
  host: PoolHost;
  driver: string;
  capabilities: DriverCapabilities;
}

export async function locateInstance(deps: Pick<LiveOpsDeps, 'table' | 'pool'>, instanceId: string): Promise<LocatedInstance> {
  const routable = deps.table.endpoint(instanceId);
  const frozen = routable === undefined ? deps.table.pausedEndpoint(instanceId) : undefined;
  const endpoint = routable ?? frozen;
  if (endpoint === undefined) throw new ShoalError('not-found', `no instance ${JSON.stringify(instanceId)} routed by this provider`, { field: 'id' });
  const host = deps.pool.get(endpoint.hostId);
  if (host === undefined) throw new ShoalError('unavailable', `the host ${endpoint.hostId} of instance ${instanceId} is not in the pool`, { field: 'id' });
  const info = await host.client.get(instanceId);
  if (info === undefined) throw new ShoalError('not-found', `host ${host.id} no longer has instance ${instanceId}`, { field: 'id' });
  const declared = host.report?.drivers.find((d) => d.name === info.driver);
  if (declared === undefined) throw new ShoalError('unavailable', `host ${host.id} does not report the driver ${info.driver} of instance ${instanceId}`, { field: 'id' });
  return { endpoint, paused: frozen !== undefined, host, driver: info.driver, capabilities: declared.capabilities };
}

function need(l: LocatedInstance, capability: LiveCapability): void {
  if (l.capabilities[capability]) return;
  throw new ShoalError('unsupported', `instance ${l.endpoint.id} runs on driver ${l.driver}, which cannot ${VERB[capability]}`, { field: 'id', detail: { driver: l.driver, capability } });
}

const event = (deps: LiveOpsDeps, kind: string, service: string, hostId: string, instanceId: string, detail: unknown): void =>
  void deps.registry
    .appendEvent({ kind, service, hostId, instanceId, detail })
    .catch((err: unknown) => deps.log.warn({ instance: instanceId, err: String(err) }, `recording the ${kind} event failed`));

/** Freezes an instance in memory: no message is routed to it until resumeInstance. */
export async function pauseInstance(deps: LiveOpsDeps, instanceId: string): Promise<void> {
  const l = await locateInstance(deps, instanceId);
  if (l.paused) throw new ShoalError('conflict', `instance ${instanceId} is paused already`, { field: 'id' });
  need(l, 'canPause');
  // Out of routing first, so no new message is sent to an instance about to freeze.
  deps.table.pause(instanceId);
  try {
    await l.host.client.pause(instanceId);
  } catch (e) {
    deps.table.unpause(instanceId);
    throw e;
  }
  await deps.registry.updateDeployment(l.endpoint.deploymentId, { pausedAt: (deps.now ?? Date.now)() });
  event(deps, 'paused', l.endpoint.service, l.host.id, instanceId, {});
}

export async function resumeInstance(deps: LiveOpsDeps, instanceId: string): Promise<RouteEndpoint> {
  const l = await locateInstance(deps, instanceId);
  if (!l.paused) throw new ShoalError('conflict', `instance ${instanceId} is not paused`, { field: 'id' });
  await l.host.client.resume(instanceId);
  const ep = deps.table.unpause(instanceId) ?? l.endpoint;
  await deps.registry.updateDeployment(l.endpoint.deploymentId, { pausedAt: null });
  event(deps, 'resumed', l.endpoint.service, l.host.id, instanceId, {});
  return ep;
}

export interface SnapshotOptions {
  reason?: SavedStateReason;
  label?: string;
  /** Kept this long, then expired (default: until removed). */
  ttlMs?: number;
}

async function capture(deps: LiveOpsDeps, l: LocatedInstance, o: SnapshotOptions & { hold?: boolean }): Promise<SavedStateRecord> {
  need(l, 'canSnapshot');
  const snap = await l.host.client.snapshot(l.endpoint.id, { hold: o.hold === true });
  const now = (deps.now ?? Date.now)();
  return deps.registry.saveState({
    service: l.endpoint.service,
    version: l.endpoint.version,
    digest: snap.digest,
    size: snap.size,
    driver: l.driver,
    sourceInstance: l.endpoint.id,
    sourceHost: l.host.id,
    reason: o.reason ?? 'snapshot',
    ...(o.label === undefined ? {} : { label: o.label }),
    createdAt: now,
    ...(o.ttlMs === undefined ? {} : { expiresAt: now + o.ttlMs }),
  });
}

/** Captures a running instance's state (messages in flight finish first; it keeps serving). */
export async function snapshotInstance(deps: LiveOpsDeps, instanceId: string, o: SnapshotOptions = {}): Promise<SavedStateRecord> {
  const l = await locateInstance(deps, instanceId);
  if (l.paused) throw new ShoalError('conflict', `instance ${instanceId} is paused: resume it first`, { field: 'id' });
  const state = await capture(deps, l, o);
  event(deps, 'snapshot', l.endpoint.service, l.host.id, instanceId, { state: state.id, digest: state.digest, size: state.size, reason: state.reason });
  return state;
}

/**
 * Saves the state and frees the host: the instance is removed, its later messages wait
 * for a restore. Messages held during the capture come back `gone` to the router, which
 * sends them on (to a restored instance, or to the activator).
 */
export async function suspendInstance(deps: LiveOpsDeps, instanceId: string, o: { ttlMs?: number } = {}): Promise<SavedStateRecord> {
  const l = await locateInstance(deps, instanceId);
  if (l.paused) throw new ShoalError('conflict', `instance ${instanceId} is paused: resume it first`, { field: 'id' });
  let state: SavedStateRecord;
  try {
    state = await capture(deps, l, { ...o, reason: 'suspend', hold: true });
  } catch (e) {
    await l.host.client.release(instanceId).catch((err: unknown) => deps.log.warn({ instance: instanceId, err: String(err) }, 'releasing the held messages of a failed suspend failed (the hold ends by itself)'));
    throw e;
  }
  deps.table.remove(instanceId, 'scaled-down');
  await l.host.client.remove(instanceId);
  await deps.registry
    .updateDeployment(l.endpoint.deploymentId, { state: 'stopped', error: `suspended to state ${state.id}`, leaseUntil: null })
    .catch((err: unknown) => deps.log.warn({ deployment: l.endpoint.deploymentId, err: String(err) }, 'marking a suspended deployment stopped failed'));
  event(deps, 'suspended', l.endpoint.service, l.host.id, instanceId, { state: state.id, digest: state.digest, size: state.size });
  return state;
}

/** Starts a new instance from a saved state, on `o.host` or wherever its driver runs. */
export async function restoreState(deps: LiveOpsDeps, stateId: string, o: { host?: string; consume?: boolean } = {}): Promise<RouteEndpoint> {
  const state = await deps.registry.getState(stateId);
  if (state === undefined) throw new ShoalError('not-found', `no saved state ${JSON.stringify(stateId)}`, { field: 'id' });
  const entry = deps.table.service(state.service);
  if (entry === undefined) throw new ShoalError('not-found', `the service ${state.service} of state ${stateId} is not registered`, { field: 'id' });
  if (entry.version !== state.version) {
    throw new ShoalError('conflict', `state ${stateId} is of ${state.service} version ${state.version}; the current version is ${entry.version}`, { field: 'id' });
  }
  const image = await deps.images.resolve(entry.description.image);
  const views = hostViews(deps.pool.placeable(), deps.table.endpoints(entry.name), state.driver);
  if (o.host !== undefined) for (const id of [...views.keys()]) if (id !== o.host) views.delete(id);
  const pick = choosePlacements(entry, image, 1, [], views, deps.rand ?? Math.random).picks[0];
  const target = pick === undefined ? undefined : deps.pool.get(pick.host);
  if (pick === undefined || target === undefined) {
    throw new ShoalError('unavailable', `no host ${o.host === undefined ? '' : `${o.host} `}offers the ${state.driver} driver with room for ${state.service}`, { field: o.host === undefined ? 'id' : 'host' });
  }
  const plan = { ...planFor(entry, image, pick.driver, deps.storeUrl(), deps.readinessTimeoutMs, undefined), from: state.digest };
  const ep = await adopt(deps, target, await target.client.deploy(plan), entry.version);
  if (o.consume === true) await deps.registry.removeState(state.id);
  event(deps, 'restored', state.service, target.id, ep.id, { state: state.id, digest: state.digest, from: state.sourceInstance });
  return ep;
}

/** Copies a running instance on its own host; both serve, their states diverge. */
export async function forkInstance(deps: LiveOpsDeps, instanceId: string): Promise<RouteEndpoint> {
  const l = await locateInstance(deps, instanceId);
  if (l.paused) throw new ShoalError('conflict', `instance ${instanceId} is paused: resume it first`, { field: 'id' });
  need(l, 'canClone');
  const ep = await adopt(deps, l.host, await l.host.client.fork(instanceId), l.endpoint.version);
  event(deps, 'forked', l.endpoint.service, l.host.id, ep.id, { from: instanceId });
  return ep;
}

/** Records a new instance a host started (restore, fork) and routes to it. */
async function adopt(deps: LiveOpsDeps, host: PoolHost, result: DeploymentResult, version: string): Promise<RouteEndpoint> {
  const record = await deps.registry.createDeployment({
    id: randomUUID(),
    service: result.endpoint.service.name,
    version,
    state: 'ready',
    hostId: host.id,
    instanceId: result.instance.id,
    endpoint: result.endpoint,
    timeline: result.timeline,
    claimedBy: deps.providerId,
  });
  const ep = deps.deployer.endpointOf(result.endpoint, record.id, host, version, deps.providerId);
  deps.table.add(ep);
  return ep;
}
