// Keeps the routing table, the registry and the hosts in agreement.
// - On start: services from the registry; each deployment checked against its host's own
//   list of instances (ready ones go back into routing with a freshly signed token, ones
//   that are gone are marked stopped, a deployment this provider had in flight when it
//   died is adopted if its instance came up, else marked failed; instances no record
//   names are adopted or removed).
// - Host events: a crashed, exited or removed instance leaves the routing set the moment
//   its event arrives, before anything else is routed; the registry learns afterwards.
// - Host states: a dead host's endpoints leave routing at once, and the provider that
//   declared it dead redeploys its instances elsewhere; a host that comes back is checked
//   again (its instances that were replaced meanwhile are removed).
// - Periodically: what other providers sharing the database did (services added or
//   removed, deployments made ready or stopped) is folded into this provider's table.
import type { ControlPlane } from './control-plane.ts';
import type { HostPool, Logger, PoolHost } from './host-pool.ts';
import type { Deployer } from './deployer.ts';
import type { DeploymentRecord, HostState, Registry } from './registry/index.ts';
import type { RemovalReason, RoutingTable } from './routing-table.ts';
import type { HostEvent, InstanceInfo } from '../protocol/deployment.ts';
import { conditionalWrite, logHostFailure, logWriteFailure } from './write-failures.ts';

export interface ReconcilerOptions {
  registry: Registry;
  pool: HostPool;
  table: RoutingTable;
  deployer: Pick<Deployer, 'endpointOf'>;
  /** Redeploys a dead host's instances elsewhere. */
  control: Pick<ControlPlane, 'deploy'>;
  providerId: string;
  log: Logger;
  /** How often to fold in what other providers did. Default 2 s. */
  syncIntervalMs?: number;
  /** Tokens closer than this to expiry are refreshed from their host. Default 1 h. */
  refreshTokensWithinMs?: number;
}

export interface Reconciler {
  /** The start-up pass. */
  reconcile(): Promise<{ routed: number; stopped: number; adopted: number; removed: number; failed: number }>;
  /** One host against the registry (after it comes back, or on demand). */
  reconcileHost(host: PoolHost): Promise<void>;
  /** Fold in the registry's current services and ready deployments. */
  sync(): Promise<void>;
  onInstanceEvent(host: PoolHost, event: HostEvent): void;
  onHostState(host: PoolHost, from: HostState, to: HostState, decidedHere: boolean): void;
  start(): void;
  close(): Promise<void>;
}

const GONE: Partial<Record<HostEvent['type'], RemovalReason>> = { crashed: 'crashed', oom: 'oom', exited: 'exited', removed: 'removed' };
const LIVE = new Set(['pending', 'deploying', 'ready']);

export function createReconciler(options: ReconcilerOptions): Reconciler {
  const { registry, pool, table, deployer, control, log } = options;
  const syncMs = options.syncIntervalMs ?? 2000;
  const refreshWithin = options.refreshTokensWithinMs ?? 3600_000;
  let timer: ReturnType<typeof setInterval> | undefined;
  let syncing: Promise<void> | undefined;
  let closed = false;
  const work = new Set<Promise<unknown>>();
  const track = <T>(p: Promise<T>): Promise<T> => {
    work.add(p);
    // Each tracked task logs its own failure; this only forgets it once settled.
    void p.then(
      () => work.delete(p),
      () => work.delete(p),
    );
    return p;
  };

  const knownAt = new Map<string, number>();

  async function loadServices(): Promise<void> {
    const records = await registry.listServices();
    const names = new Set<string>();
    for (const r of records) {
      names.add(r.name);
      const known = table.service(r.name);
      if (known !== undefined && known.version === r.version && r.updatedAt <= (knownAt.get(r.name) ?? 0)) continue;
      try {
        table.putService(r.description);
        knownAt.set(r.name, r.updatedAt);
      } catch (e) {
        log.error({ service: r.name, err: String(e) }, 'a registered service cannot be compiled; not served');
      }
    }
    for (const entry of table.services()) {
      if (!names.has(entry.name)) {
        table.removeService(entry.name);
        knownAt.delete(entry.name);
      }
    }
  }
  
  async function listOn(host: PoolHost): Promise<InstanceInfo[] | undefined> {
    try {
      return await host.client.list();
    } catch (e) {
      log.warn({ host: host.id, err: (e as Error).message }, 'cannot list the instances of a host');
      return undefined;
    }
  }

  type Counts = { routed: number; stopped: number; adopted: number; removed: number; failed: number };
  const zero = (): Counts => ({ routed: 0, stopped: 0, adopted: 0, removed: 0, failed: 0 });

  /**
   * One host: its instances against the registry's records of it. `records` are all the
   * deployments on this host; `inFlight` all claims in flight (any host); with
   * `staleOwnClaims` (the start-up pass) this provider's own claims are leftovers of a
   * previous run.
   */
  async function reconcileOn(host: PoolHost, instances: InstanceInfo[], records: DeploymentRecord[], inFlight: DeploymentRecord[], staleOwnClaims: boolean, counts: Counts) {
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
        if (!staleOwnClaims || d.claimedBy !== options.providerId) continue;
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
          table.add(deployer.endpointOf(candidate.endpoint, d.id, host, d.version, options.providerId));
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

    // Instances no record names.
    for (const info of instances) {
      if (named.has(info.id)) continue;
      if (info.state !== 'ready' && info.state !== 'paused') continue;
      // Someone may be deploying it right now (its record comes when the plan returns).
      if (inFlight.some((d) => d.service === info.service.name && d.hostId === host.id && !(staleOwnClaims && d.claimedBy === options.providerId))) continue;
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
          claimedBy: options.providerId,
        });
        table.add(deployer.endpointOf(info.endpoint, record.id, host, info.service.version, options.providerId));
        counts.adopted++;
        void registry
          .appendEvent({ kind: 'adopted', service: info.service.name, hostId: host.id, instanceId: info.id })
          .catch(logWriteFailure(log, 'the adopted event', { instance: info.id, host: host.id }));
      } catch (e) {
        log.warn({ instance: info.id, err: String(e) }, 'adopting an unrecorded instance failed');
      }
    }
  }

  async function reconcile() {
    const counts = zero();
    await loadServices();
    await pool.load();
    const inFlight = await registry.listDeployments({ state: ['pending', 'deploying'] });
    await Promise.all(
      pool.list().map(async (host) => {
        if (host.state === 'dead') return;
        const instances = await listOn(host);
        if (instances === undefined) return;
        await reconcileOn(host, instances, await registry.listDeployments({ hostId: host.id }), inFlight, true, counts);
      }),
    );
    // Our own claims on hosts we could not reach (or with no host yet): they cannot be finished.
    for (const d of inFlight) {
      if (d.claimedBy !== options.providerId) continue;
      const fresh = await registry.getDeployment(d.id);
      if (fresh && (fresh.state === 'pending' || fresh.state === 'deploying')) {
        await registry
          .updateDeployment(d.id, { state: 'failed', error: 'the provider restarted before the deployment finished', leaseUntil: null })
          .catch(logWriteFailure(log, 'marking an unfinished deployment failed', { deployment: d.id, service: d.service }));
        counts.failed++;
      }
    }
    log.info(counts, 'reconciled with the registry and the hosts');
    return counts;
  }

  async function reconcileHost(host: PoolHost): Promise<void> {
    const instances = await listOn(host);
    if (instances === undefined) return;
    const counts = zero();
    const inFlight = await registry.listDeployments({ state: ['pending', 'deploying'] });
    await reconcileOn(host, instances, await registry.listDeployments({ hostId: host.id }), inFlight, false, counts);
    if (counts.routed + counts.stopped + counts.adopted + counts.removed > 0) log.info({ host: host.id, ...counts }, 'reconciled a host');
  }

  async function sync(): Promise<void> {
    if (syncing) return syncing;
    syncing = (async () => {
      await loadServices();
      const ready = await registry.listDeployments({ state: 'ready' });
      const readyIds = new Set<string>();
      const now = Date.now();
      for (const d of ready) {
        if (d.instanceId === undefined) continue;
        readyIds.add(d.instanceId);
        const known = table.endpoint(d.instanceId);
        if (known !== undefined) {
          if (known.expiresAt - now < refreshWithin) {
            const host = pool.get(known.hostId);
            const info = await host?.client.get(known.id).catch(logHostFailure(log, 'refreshing a route token', { instance: known.id, host: known.hostId }));
            if (info?.endpoint) table.refresh(known.id, info.endpoint);
          }
          continue;
        }
        if (d.endpoint === undefined || d.hostId === undefined || table.service(d.service) === undefined) continue;
        if (d.claimedBy === options.providerId && now - d.updatedAt < 2000) continue; // ours, being added right now
        const removedAt = table.removedAt(d.instanceId);
        if (removedAt !== undefined && now - removedAt < 15_000) continue; // it just left routing: let its event be recorded first
        const host = pool.get(d.hostId);
        if (host === undefined || host.state !== 'alive') continue;
        // A record is a hint: check with the host before routing to it (another provider
        // made it, or it is stale from before a restart).
        const info = await host.client.get(d.instanceId).catch((e: unknown) => {
          log.warn({ instance: d.instanceId, host: host.id, err: (e as Error).message }, 'checking a recorded instance with its host failed; trying again next sync');
          return null;
        });
        if (info === null) continue; // host not answering now: next time
        if (info === undefined || (info.state !== 'ready' && info.state !== 'paused' && info.state !== 'starting')) {
          await conditionalWrite(
            registry.updateDeployment(d.id, { state: 'stopped', error: `instance ${d.instanceId} is no longer on host ${host.id}`, ifState: 'ready' }),
            log,
            'marking a vanished instance stopped',
            { deployment: d.id, instance: d.instanceId, host: host.id },
          );
          continue;
        }
        if (info.state !== 'ready' || info.endpoint === undefined || table.endpoint(d.instanceId) !== undefined) continue;
        table.add(deployer.endpointOf(info.endpoint, d.id, host, d.version, d.claimedBy));
      }
      // Endpoints whose deployment another provider stopped.
      for (const ep of table.allEndpoints()) {
        if (!readyIds.has(ep.id) && now - ep.readyAt > 2000) table.remove(ep.id, 'undeployed');
      }
    })()
      .catch((e: unknown) => log.warn({ err: String(e) }, 'registry sync failed'))
      .finally(() => {
        syncing = undefined;
      });
    return syncing;
  }

  function onInstanceEvent(host: PoolHost, event: HostEvent): void {
    const reason = GONE[event.type];
    if (reason === undefined) return;
    // First: out of routing, synchronously, before anything else is routed.
    const ep = table.remove(event.instance, reason);
    if (closed) return;
    track(
      (async () => {
        const deploymentId = ep?.deploymentId ?? (await registry.listDeployments({ hostId: host.id, state: 'ready' })).find((d) => d.instanceId === event.instance)?.id;
        if (deploymentId === undefined) return;
        const failed = reason === 'crashed' || reason === 'oom';
        const detail = [event.type, event.code === undefined ? '' : `code ${event.code}`, event.signal ?? '', event.message ?? ''].filter(Boolean).join(' ');
        const changed = await conditionalWrite(
          registry.updateDeployment(deploymentId, { state: failed ? 'failed' : 'stopped', error: `instance ${event.instance} ${detail}`, ifState: 'ready' }),
          log,
          `recording an instance ${event.type}`,
          { deployment: deploymentId, instance: event.instance, host: host.id },
        );
        if (!changed) return; // another provider recorded it, or it was undeployed on purpose (or the write failed: logged)
        await registry
          .appendEvent({ kind: `instance-${event.type}`, service: event.service, hostId: host.id, instanceId: event.instance, detail: event })
          .catch(logWriteFailure(log, `the instance-${event.type} event`, { instance: event.instance, host: host.id }));
        if (failed) log.warn({ instance: event.instance, service: event.service, host: host.id, detail }, 'instance failed; out of routing');
      })().catch((e: unknown) => log.error({ err: String(e) }, 'recording an instance event failed')),
    );
  }

  function onHostState(host: PoolHost, _from: HostState, to: HostState, decidedHere: boolean): void {
    if (closed) return;
    if (to === 'dead') {
      const lost = table.allEndpoints().filter((e) => e.hostId === host.id);
      for (const ep of lost) table.remove(ep.id, 'host-dead');
      if (!decidedHere) return;
      track(
        (async () => {
          const records = await registry.listDeployments({ hostId: host.id, state: ['ready', 'pending', 'deploying'] });
          const perService = new Map<string, number>();
          for (const d of records) {
            const moved = await conditionalWrite(
              registry.updateDeployment(d.id, { state: 'failed', error: `host ${host.id} is dead`, leaseUntil: null, ifState: d.state }),
              log,
              'marking a dead host\'s deployment failed',
              { deployment: d.id, host: host.id },
            );
            if (moved && d.state === 'ready') perService.set(d.service, (perService.get(d.service) ?? 0) + 1);
          }
          for (const [service, count] of perService) {
            if (table.service(service) === undefined) continue;
            log.warn({ host: host.id, service, count }, 'redeploying the instances of a dead host');
            const outcome = await control.deploy(service, { count, reason: 'replace', exclude: [host.id] }).catch((e: unknown) => {
              log.error({ service, err: String(e) }, 'redeploying after a host died failed');
              return undefined;
            });
            const ready = outcome?.ready.map((e) => ({ instance: e.id, host: e.hostId })) ?? [];
            void registry
              .appendEvent({ kind: 'host-dead-redeployed', service, hostId: host.id, detail: { count, ready } })
              .catch(logWriteFailure(log, 'the host-dead-redeployed event', { service, host: host.id }));
          }
        })().catch((e: unknown) => log.error({ err: String(e) }, 'handling a dead host failed')),
      );
      return;
    }
    if (to === 'alive') track(reconcileHost(host).catch((e: unknown) => log.warn({ host: host.id, err: String(e) }, 'reconciling a returning host failed')));
  }

  return {
    reconcile,
    reconcileHost,
    sync,
    onInstanceEvent,
    onHostState,
    start() {
      if (timer || closed) return;
      timer = setInterval(() => void sync(), syncMs);
      timer.unref();
    },
    async close() {
      closed = true;
      if (timer) clearInterval(timer);
      await syncing;
      await Promise.allSettled([...work]);
    },
  };
}
