// Moving a running instance to another host with its state (issues 13 and 14). Two ways:
//
// - Live (pre-copy), when both hosts' drivers migrate live (capability liveMigrates, the
//   vm driver): the target deploys an instance that waits for its state and answers an
//   offer (where to send, a key for this one move); the source sends its running instance
//   there while it keeps serving, and holds new messages only from just before its stop.
//   Once the target is ready, the route switches to it and the source is removed.
// - Stop-and-copy, for the others (and when a live move is given up because a message was
//   still in flight at the stop): the source captures the instance and keeps its new
//   messages held (snapshot?hold=1), the target starts `from` the state in the store, the
//   route switches, the source is removed.
//
// Either way the held messages are then answered `gone` (never delivered), which the router
// retries on the new endpoint: none is lost, none runs twice. If the target fails, the
// source lets its messages go on (release / migrate failed / resumeMigrated) and keeps serving.
import { randomUUID } from 'node:crypto';
import { choosePlacements, hostViews, planFor, type Pick as Placement } from './deploy-plan.ts';
import type { Deployer } from './deployer.ts';
import type { HostPool, Logger, PoolHost } from './host-pool.ts';
import type { Registry } from './registry/index.ts';
import type { RouteEndpoint, RoutingTable, ServiceEntry } from './routing-table.ts';
import type { ImageResolver, RemoteImage } from '../image/index.ts';
import { isShoalError, ShoalError, type DeploymentResult, type LiveMigrationResult } from '../protocol/index.ts';

export interface MigrationDeps {
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
}

export interface MigrationResult {
  from: { instance: string; host: string };
  to: { instance: string; host: string };
  mode: 'live' | 'stop-and-copy';
  /** Stop-and-copy: the captured state's digest. */
  state?: string;
  /** Live: what the source's driver measured. */
  live?: Omit<LiveMigrationResult, 'id'>;
  /** Stop-and-copy after a live attempt failed with the source intact: why it failed. */
  liveFailed?: string;
}

export async function migrateInstance(deps: MigrationDeps, instanceId: string, options: { host?: string } = {}): Promise<MigrationResult> {
  const { pool, table } = deps;
  const ep = table.endpoint(instanceId);
  if (ep === undefined) throw new ShoalError('not-found', `no routed instance ${JSON.stringify(instanceId)}`, { field: 'id' });
  const entry = table.service(ep.service);
  const source = pool.get(ep.hostId);
  if (entry === undefined || source === undefined) throw new ShoalError('not-found', `instance ${instanceId} has no service or host on record`, { field: 'id' });
  const image = await deps.images.resolve(entry.description.image);
  const views = hostViews(pool.placeable(), table.endpoints(entry.name), entry.description.driver ?? image.driver);
  if (options.host !== undefined) for (const id of [...views.keys()]) if (id !== options.host) views.delete(id);
  const pick = choosePlacements(entry, image, 1, [source.id], views, deps.rand ?? Math.random).picks[0];
  const target = pick === undefined ? undefined : pool.get(pick.host);
  if (pick === undefined || target === undefined) throw new ShoalError('unavailable', `no other host can take instance ${instanceId}`, { field: 'host' });
  const move: Move = { deps, ep, entry, image, source, target, pick };
  if (migratesLive(source, pick.driver) && migratesLive(target, pick.driver)) {
    try {
      return await moveLive(move);
    } catch (e) {
      // Given up with the source serving as before: a message was in flight at the stop, or
      // the instance's own driver cannot. Stop-and-copy has neither limit.
      // Or the target failed after the switch-over and the source took over again from its
      // stop (QEMU 7.2 under TCG sometimes corrupts a guest moved under load: docs/vm-driver.md).
      const reason = isShoalError(e) ? (e.detail as { reason?: string } | undefined)?.reason : undefined;
      if (reason !== 'in-flight' && reason !== 'not-supported' && reason !== 'target-failed') throw e;
      deps.log.warn({ instance: instanceId, err: String(e) }, 'live migration given up; moving by stop-and-copy');
      return { ...(await moveStopAndCopy(move)), liveFailed: (e as Error).message };
    }
  }
  return moveStopAndCopy(move);
}

interface Move {
  deps: MigrationDeps;
  ep: RouteEndpoint;
  entry: ServiceEntry;
  image: RemoteImage;
  source: PoolHost;
  target: PoolHost;
  pick: Placement;
}

/** The host's driver of that name says it migrates live (its latest report). */
function migratesLive(host: PoolHost, driver: string): boolean {
  return host.report?.drivers.some((d) => d.name === driver && d.capabilities.liveMigrates === true) === true;
}

async function moveLive(m: Move): Promise<MigrationResult> {
  const { deps, ep, source, target } = m;
  const instanceId = ep.id;
  const plan = planFor(m.entry, m.image, m.pick.driver, deps.storeUrl(), deps.readinessTimeoutMs, undefined);
  const incoming = await target.client.receive(plan);
  let sent: LiveMigrationResult;
  try {
    // The key goes from the target to the source only here, over the two hosts' authenticated control APIs.
    sent = await source.client.migrateLive(instanceId, incoming.offer);
  } catch (e) {
    // The source runs on (its driver cancelled); the target goes.
    await target.client.abortIncoming(incoming.instance).catch((err: unknown) => deps.log.warn({ instance: incoming.instance, err: String(err) }, 'removing the target of a failed live migration failed'));
    throw e;
  }
  // The target failed after the state left the source: once the target is gone for sure,
  // the instance runs on the source again from its stop, and its held messages go on there.
  // Whether the source runs again: only then may the caller move it another way.
  const takeBack = async (removeTarget: () => Promise<unknown>): Promise<boolean> => {
    try {
      await removeTarget();
    } catch (err) {
      deps.log.error({ instance: incoming.instance, err: String(err) }, 'removing the failed target of a live migration failed: the source stays stopped (two copies must never run)');
      return false;
    }
    try {
      await source.client.resumeMigrated(instanceId);
      return true;
    } catch (err) {
      deps.log.error({ instance: instanceId, err: String(err) }, 'resuming the source of a failed live migration failed: the instance is lost');
      return false;
    }
  };
  const targetFailed = (e: unknown): ShoalError =>
    new ShoalError('unavailable', `the live migration's target failed after the switch-over; the source runs on from its stop: ${(e as Error).message}`, { detail: { reason: 'target-failed' } });
  let result: DeploymentResult;
  try {
    result = await target.client.accept(incoming.instance);
  } catch (e) {
    // A failed accept has removed the target already; the abort makes sure (404 is fine).
    if (await takeBack(() => target.client.abortIncoming(incoming.instance))) throw targetFailed(e);
    throw e;
  }
  const { id: _id, ...live } = sent;
  let to: RouteEndpoint;
  try {
    to = await routeTo(m, result);
  } catch (e) {
    if (await takeBack(() => target.client.remove(result.instance.id))) throw targetFailed(e);
    throw e;
  }
  await retire(m, to, { mode: 'live', downtimeMs: live.downtimeMs });
  return { from: { instance: instanceId, host: source.id }, to: { instance: to.id, host: target.id }, mode: 'live', live };
}

async function moveStopAndCopy(m: Move): Promise<MigrationResult> {
  const { deps, ep, source, target } = m;
  const instanceId = ep.id;
  const snap = await source.client.snapshot(instanceId, { hold: true });
  let to: RouteEndpoint;
  try {
    const plan = { ...planFor(m.entry, m.image, m.pick.driver, deps.storeUrl(), deps.readinessTimeoutMs, undefined), from: snap.digest };
    const result = await target.client.deploy(plan);
    to = await routeTo(m, result);
  } catch (e) {
    await source.client.release(instanceId).catch((err: unknown) => deps.log.warn({ instance: instanceId, err: String(err) }, 'releasing the held messages of a failed move failed (the hold ends by itself)'));
    throw e;
  }
  await retire(m, to, { mode: 'stop-and-copy', state: snap.digest });
  return { from: { instance: instanceId, host: source.id }, to: { instance: to.id, host: target.id }, mode: 'stop-and-copy', state: snap.digest };
}

/** The new instance is recorded and joins routing. */
async function routeTo(m: Move, result: DeploymentResult): Promise<RouteEndpoint> {
  const { deps, entry, target } = m;
  const record = await deps.registry.createDeployment({
    id: randomUUID(),
    service: entry.name,
    version: entry.version,
    state: 'ready',
    hostId: target.id,
    instanceId: result.instance.id,
    endpoint: result.endpoint,
    claimedBy: deps.providerId,
  });
  const to = deps.deployer.endpointOf(result.endpoint, record.id, target, entry.version, deps.providerId);
  deps.table.add(to);
  return to;
}

/**
 * The old instance leaves routing and is removed: its held messages come back `gone` and
 * are retried on the new one. Past this point they are never let go to the old one.
 */
async function retire(m: Move, to: RouteEndpoint, detail: Record<string, unknown>): Promise<void> {
  const { deps, ep, entry, source, target } = m;
  const { registry, table, log } = deps;
  table.remove(ep.id, 'undeployed');
  await source.client.remove(ep.id);
  await registry.updateDeployment(ep.deploymentId, { state: 'stopped', error: `moved to ${to.id} on host ${target.id}`, leaseUntil: null }).catch((err: unknown) => log.warn({ deployment: ep.deploymentId, err: String(err) }, 'marking a moved deployment stopped failed'));
  void registry.appendEvent({ kind: 'moved', service: entry.name, detail: { from: ep.id, fromHost: source.id, to: to.id, toHost: target.id, ...detail } }).catch((err: unknown) => log.warn({ instance: ep.id, err: String(err) }, 'recording the moved event failed'));
}
