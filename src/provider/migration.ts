// Moving a running instance to another host with its state (issue 13): the host of the
// instance captures it and keeps its new messages held (snapshot?hold=1), another host
// starts `from` the state, the new endpoint joins routing, and the old instance is
// removed. The held messages are then answered `gone` (never delivered), which the router
// retries on the new endpoint: none is lost, none runs twice. If the new host fails, the
// old one lets its messages go on (release) and keeps serving.
import { randomUUID } from 'node:crypto';
import { choosePlacements, hostViews, planFor } from './deploy-plan.ts';
import type { Deployer } from './deployer.ts';
import type { HostPool, Logger } from './host-pool.ts';
import type { Registry } from './registry/index.ts';
import type { RouteEndpoint, RoutingTable } from './routing-table.ts';
import type { ImageResolver } from '../image/index.ts';
import { ShoalError } from '../protocol/index.ts';

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
  state: string;
}

export async function migrateInstance(deps: MigrationDeps, instanceId: string, options: { host?: string } = {}): Promise<MigrationResult> {
  const { pool, table, registry, log } = deps;
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

  const snap = await source.client.snapshot(instanceId, { hold: true });
  let to: RouteEndpoint;
  try {
    const plan = { ...planFor(entry, image, pick.driver, deps.storeUrl(), deps.readinessTimeoutMs, undefined), from: snap.digest };
    const result = await target.client.deploy(plan);
    const record = await registry.createDeployment({
      id: randomUUID(),
      service: entry.name,
      version: entry.version,
      state: 'ready',
      hostId: target.id,
      instanceId: result.instance.id,
      endpoint: result.endpoint,
      claimedBy: deps.providerId,
    });
    to = deps.deployer.endpointOf(result.endpoint, record.id, target, entry.version, deps.providerId);
    table.add(to);
  } catch (e) {
    await source.client.release(instanceId).catch((err: unknown) => log.warn({ instance: instanceId, err: String(err) }, 'releasing the held messages of a failed move failed (the hold ends by itself)'));
    throw e;
  }
  // Routing goes to the new endpoint only; the old instance's held messages come back `gone` and are retried there.
  table.remove(instanceId, 'undeployed');
  await source.client.remove(instanceId);
  await registry.updateDeployment(ep.deploymentId, { state: 'stopped', error: `moved to ${to.id} on host ${target.id}`, leaseUntil: null }).catch((err: unknown) => log.warn({ deployment: ep.deploymentId, err: String(err) }, 'marking a moved deployment stopped failed'));
  void registry.appendEvent({ kind: 'moved', service: entry.name, detail: { from: instanceId, fromHost: source.id, to: to.id, toHost: target.id, state: snap.digest } }).catch((err: unknown) => log.warn({ instance: instanceId, err: String(err) }, 'recording the moved event failed'));
  return { from: { instance: instanceId, host: source.id }, to: { instance: to.id, host: target.id }, state: snap.digest };
}
