// One host's instances against the registry's records of them (the reconciler's pass over
// a host, at start-up and when a host comes back): ready records whose instance is there
// go back into routing, vanished ones are marked stopped, this provider's unfinished
// claims are adopted or failed, leftovers are removed and unrecorded instances adopted.
import type { Deployer } from './deployer.ts';
import type { Logger, PoolHost } from './host-pool.ts';
import type { DeploymentRecord, Registry } from './registry/index.ts';
import type { RoutingTable } from './routing-table.ts';
import { conditionalWrite, logHostFailure, logWriteFailure } from './write-failures.ts';
import type { InstanceInfo } from '../protocol/index.ts';

export interface HostReconcileContext {
  registry: Registry;
  table: RoutingTable;
  deployer: Pick<Deployer, 'endpointOf'>;
  providerId: string;
  log: Logger;
}

export interface ReconcileCounts {
  routed: number;
  stopped: number;
  adopted: number;
  removed: number;
  failed: number;
}

export const zeroCounts = (): ReconcileCounts => ({ routed: 0, stopped: 0, adopted: 0, removed: 0, failed: 0 });

const LIVE = new Set(['pending', 'deploying', 'ready']);

/** A host's instances, or undefined (logged) when it cannot be asked now. */
export async function listInstances(host: PoolHost, log: Logger): Promise<InstanceInfo[] | undefined> {
  try {
    return await host.client.list();
  } catch (e) {
    log.warn({ host: host.id, err: (e as Error).message }, 'cannot list the instances of a host');
    return undefined;
  }
}

/**
 * One host: its instances against the registry's records of it. `records` are all the
 * deployments on this host; `inFlight` all claims in flight (any host); with
 * `staleOwnClaims` (the start-up pass) this provider's own claims are leftovers of a
 * previous run.
 */
export async function reconcileInstances(
  ctx: HostReconcileContext,
  host: PoolHost,
  instances: InstanceInfo[],
  records: DeploymentRecord[],
  inFlight: DeploymentRecord[],
  staleOwnClaims: boolean,
  counts: ReconcileCounts,
): Promise<void> {
  const { registry, table, deployer, log, providerId } = ctx;
  const byId = new Map(instances.map((i) => [i.id, i]));
  const named = new Set<string>();
  for (const d of records) if (d.instanceId !== undefined) named.add(d.instanceId);
  const liveIds = new Set(records.filter((d) => LIVE.has(d.state) && d.instanceId !== undefined).map((d) => d.instanceId!));

  for (const d of records) {
    if (d.state === 'ready') {
      const info = d.instanceId === undefined ? undefined : byId.get(d.instanceId);
      if (info !== undefined && (info.state === 'ready' || info.state === 'paused' || info.state === 'starting')) {
        if (info.state === 'ready' && info.endpoint !== undefined && table.service(d.service) !== undefined) {
          if (table.endpoint(info.id) === undefined) {
            table.add(deployer.endpointOf(info.endpoint, d.id, host, d.version, d.claimedBy));
            counts.routed++;
          } else table.refresh(info.id, info.endpoint);
        }
        continue;
      }
      await conditionalWrite(
        registry.updateDeployment(d.id, { state: 'stopped', error: `instance ${d.instanceId ?? '?'} is no longer on host ${host.id}${info ? ` (it is ${info.state})` : ''}`, ifState: 'ready' }),
        log,
        'marking a vanished instance stopped',
        { deployment: d.id, instance: d.instanceId, host: host.id },
      );
      if (d.instanceId !== undefined) table.remove(d.instanceId, 'gone');
      counts.stopped++;
      continue;
    }
    if (d.state === 'pending' || d.state === 'deploying') {
      // Another provider's claims (and our own current ones) are left to their owner.
      if (!staleOwnClaims || d.claimedBy !== providerId) continue;
      const candidate = instances.find((i) => i.service.name === d.service && !named.has(i.id) && i.state === 'ready');
      if (candidate !== undefined && candidate.endpoint !== undefined && table.service(d.service) !== undefined) {
        named.add(candidate.id);
        await registry.updateDeployment(d.id, {
          state: 'ready',
          hostId: host.id,
          instanceId: candidate.id,
          endpoint: candidate.endpoint,
          ...(candidate.timeline ? { timeline: candidate.timeline } : {}),
          leaseUntil: null,
        });
        table.add(deployer.endpointOf(candidate.endpoint, d.id, host, d.version, providerId));
        counts.adopted++;
      } else {
        await registry
          .updateDeployment(d.id, { state: 'failed', error: 'the provider restarted before the deployment finished', leaseUntil: null })
          .catch(logWriteFailure(log, 'marking an unfinished deployment failed', { deployment: d.id, service: d.service }));
        counts.failed++;
      }
      continue;
    }
    // failed/stopped: its instance, if still there, is a leftover (e.g. replaced while its host was away).
    if (d.instanceId !== undefined && !liveIds.has(d.instanceId) && byId.has(d.instanceId)) {
      await host.client.remove(d.instanceId).catch(logHostFailure(log, 'removing a leftover instance', { instance: d.instanceId, host: host.id }));
      counts.removed++;
    }
  }

  await adoptUnrecorded(ctx, host, instances, named, inFlight, staleOwnClaims, counts);
}

/**
 * Instances no record names: adopted when their service is known, removed when it is
 * not; ones someone may be deploying right now are left alone.
 */
async function adoptUnrecorded(
  ctx: HostReconcileContext,
  host: PoolHost,
  instances: InstanceInfo[],
  named: ReadonlySet<string>,
  inFlight: DeploymentRecord[],
  staleOwnClaims: boolean,
  counts: ReconcileCounts,
): Promise<void> {
  const { registry, table, deployer, log, providerId } = ctx;
  for (const info of instances) {
    if (named.has(info.id)) continue;
    if (info.state !== 'ready' && info.state !== 'paused') continue;
    // Someone may be deploying it right now (its record comes when the plan returns).
    if (inFlight.some((d) => d.service === info.service.name && d.hostId === host.id && !(staleOwnClaims && d.claimedBy === providerId))) continue;
    if (Date.now() - info.createdAt < 5000 && !staleOwnClaims) continue;
    if (table.service(info.service.name) === undefined) {
      await host.client.remove(info.id).catch(logHostFailure(log, 'removing an instance of an unknown service', { instance: info.id, host: host.id }));
      counts.removed++;
      continue;
    }
    if (info.endpoint === undefined || info.state !== 'ready') continue;
    try {
      const record = await registry.createDeployment({
        service: info.service.name,
        version: info.service.version,
        state: 'ready',
        hostId: host.id,
        instanceId: info.id,
        endpoint: info.endpoint,
        ...(info.timeline ? { timeline: info.timeline } : {}),
        claimedBy: providerId,
      });
      table.add(deployer.endpointOf(info.endpoint, record.id, host, info.service.version, providerId));
      counts.adopted++;
      void registry
        .appendEvent({ kind: 'adopted', service: info.service.name, hostId: host.id, instanceId: info.id })
        .catch(logWriteFailure(log, 'the adopted event', { instance: info.id, host: host.id }));
    } catch (e) {
      log.warn({ instance: info.id, err: String(e) }, 'adopting an unrecorded instance failed');
    }
  }
}
