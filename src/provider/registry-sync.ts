// Folding what other providers sharing the database did into this provider's routing
// table: services added, changed or removed, deployments made ready (checked with their
// host before routing) or stopped, and route tokens near expiry refreshed.
import type { Deployer } from './deployer.ts';
import type { HostPool, Logger } from './host-pool.ts';
import type { Registry } from './registry/index.ts';
import type { RoutingTable } from './routing-table.ts';
import { conditionalWrite, logHostFailure } from './write-failures.ts';

export interface RegistrySyncOptions {
  registry: Registry;
  pool: HostPool;
  table: RoutingTable;
  deployer: Pick<Deployer, 'endpointOf'>;
  providerId: string;
  log: Logger;
  /** Tokens closer than this to expiry are refreshed from their host. Default 4 min (hosts sign for 10). */
  refreshTokensWithinMs?: number;
}

export interface RegistrySync {
  /** The registry's services into the table (new versions compiled, removed ones dropped). */
  loadServices(): Promise<void>;
  /** Services, then ready deployments; one pass at a time (a second call joins the running one). Never rejects: failures are logged. */
  sync(): Promise<void>;
  /** The pass under way, if any. */
  running(): Promise<void> | undefined;
}

export function createRegistrySync(options: RegistrySyncOptions): RegistrySync {
  const { registry, pool, table, deployer, log } = options;
  const refreshWithin = options.refreshTokensWithinMs ?? 4 * 60_000;
  /** When each service's record was last installed (its updatedAt). */
  const knownAt = new Map<string, number>();
  let syncing: Promise<void> | undefined;

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
          // Re-sign within refreshWithin of expiry, or past half its life for hosts that sign
          // for less (so a short lifetime does not mean a re-sign on every pass).
          if (known.expiresAt - now < Math.min(refreshWithin, known.tokenLifetimeMs / 2)) {
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

  return { loadServices, sync, running: () => syncing };
}
