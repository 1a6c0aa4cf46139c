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
// One host's pass is host-reconcile.ts, the periodic fold registry-sync.ts; this module
// runs them and handles the events.
import type { ControlPlane } from './control-plane.ts';
import type { HostPool, Logger, PoolHost } from './host-pool.ts';
import type { Deployer } from './deployer.ts';
import { listInstances, reconcileInstances, zeroCounts, type ReconcileCounts } from './host-reconcile.ts';
import type { HostState, Registry } from './registry/index.ts';
import { createRegistrySync } from './registry-sync.ts';
import type { RemovalReason, RoutingTable } from './routing-table.ts';
import type { HostEvent } from '../protocol/index.ts';
import { conditionalWrite, logWriteFailure } from './write-failures.ts';

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
  /** Tokens closer than this to expiry are refreshed from their host. Default 4 min (hosts sign for 10). */
  refreshTokensWithinMs?: number;
}

export interface Reconciler {
  /** The start-up pass. */
  reconcile(): Promise<ReconcileCounts>;
  /** One host against the registry (after it comes back, or on demand). */
  reconcileHost(host: PoolHost): Promise<void>;
  /** Fold in the registry's current services and ready deployments. */
  sync(): Promise<void>;
  onInstanceEvent(host: PoolHost, event: HostEvent): void;
  onHostState(host: PoolHost, from: HostState, to: HostState, decidedHere: boolean): void;
  start(): void;
  close(): Promise<void>;
}

const GONE: Partial<Record<HostEvent['type'], RemovalReason>> = {
  crashed: 'crashed',
  oom: 'oom',
  exited: 'exited',
  removed: 'removed',
  unresponsive: 'unresponsive',
};
/** Reasons that count as a failure of the instance (recorded failed; crash rules apply). */
const FAILED: ReadonlySet<RemovalReason> = new Set(['crashed', 'oom', 'unresponsive']);

export function createReconciler(options: ReconcilerOptions): Reconciler {
  const { registry, pool, table, deployer, control, log } = options;
  const syncMs = options.syncIntervalMs ?? 2000;
  const ctx = { registry, table, deployer, providerId: options.providerId, log };
  const registrySync = createRegistrySync({ registry, pool, table, deployer, providerId: options.providerId, log, ...(options.refreshTokensWithinMs === undefined ? {} : { refreshTokensWithinMs: options.refreshTokensWithinMs }) });
  let timer: ReturnType<typeof setInterval> | undefined;
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

  async function reconcile() {
    const counts = zeroCounts();
    await registrySync.loadServices();
    await pool.load();
    const inFlight = await registry.listDeployments({ state: ['pending', 'deploying'] });
    await Promise.all(
      pool.list().map(async (host) => {
        if (host.state === 'dead') return;
        const instances = await listInstances(host, log);
        if (instances === undefined) return;
        await reconcileInstances(ctx, host, instances, await registry.listDeployments({ hostId: host.id }), inFlight, true, counts);
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
    const instances = await listInstances(host, log);
    if (instances === undefined) return;
    const counts = zeroCounts();
    const inFlight = await registry.listDeployments({ state: ['pending', 'deploying'] });
    await reconcileInstances(ctx, host, instances, await registry.listDeployments({ hostId: host.id }), inFlight, false, counts);
    if (counts.routed + counts.stopped + counts.adopted + counts.removed > 0) log.info({ host: host.id, ...counts }, 'reconciled a host');
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
        const failed = FAILED.has(reason);
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
    sync: () => registrySync.sync(),
    onInstanceEvent,
    onHostState,
    start() {
      if (timer || closed) return;
      timer = setInterval(() => void registrySync.sync(), syncMs);
      timer.unref();
    },
    async close() {
      closed = true;
      if (timer) clearInterval(timer);
      await registrySync.running();
      await Promise.allSettled([...work]);
    },
  };
}
