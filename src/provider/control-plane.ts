// The provider's control plane: the one place that orchestrates registering and removing
// services and hosts and deploying on request. The HTTP API (server.ts), the farms,
// the reconciler and start-up all call these functions; none of them calls the HTTP API.
// Each step is durable first (the registry), then in memory (the routing table), then
// the follow-ups (cooldowns reset, images resolved ahead, old versions drained, events).
import type { Deployer, DeployOutcome, DeployReason } from './deployer.ts';
import type { HostPool, HostRegistrationRequest, Logger, PoolHost } from './host-pool.ts';
import type { Registry, ServiceRecord } from './registry/index.ts';
import { compileService, type RoutingTable } from './routing-table.ts';
import { logHostFailure, logWriteFailure } from './write-failures.ts';
import { ShoalError, validateServiceDescription, type ServiceDescription } from '../protocol/index.ts';

export interface ControlPlaneOptions {
  registry: Registry;
  table: RoutingTable;
  pool: HostPool;
  deployer: Pick<Deployer, 'deploy' | 'undeploy' | 'stopDeployment' | 'prepare'>;
  /** Forget cooldowns of failed cold starts (all services when none is named). */
  resetCooldown(service?: string): void;
  /** Answer every message waiting for `service` with a failure (the activator's fail). */
  failWaiting(service: string, reason: string): void;
  /** An image in another registry is copied into the store and pinned by digest (foreign-images.ts); others are returned as they are. */
  pinImage?(image: string, field: string): Promise<string>;
  log: Logger;
}

export interface ControlPlane {
  /** Validates and stores a service description; a new version drains the old one's instances. */
  registerService(input: unknown): Promise<{ service: ServiceRecord; created: boolean }>;
  /** Forgets a service, answers its waiting messages and stops its deployments. ShoalError 'not-found'. */
  removeService(name: string): Promise<{ stopped: number }>;
  /** Deploys `count` instances now. ShoalError 'not-found' for an unknown service, 'unavailable' when no host can take it. */
  deploy(service: string, options?: { count?: number; reason?: DeployReason; exclude?: readonly string[] }): Promise<DeployOutcome>;
  /** Deploys one instance unless one is up (a farm instance is exactly one instance). */
  ensureInstance(service: string): Promise<DeployOutcome | undefined>;
  registerHost(request: HostRegistrationRequest): Promise<PoolHost>;
  /** False when no such host. */
  removeHost(id: string): Promise<boolean>;
}

export function createControlPlane(options: ControlPlaneOptions): ControlPlane {
  const { registry, table, pool, deployer, log } = options;

  async function registerService(input: unknown) {
    const desc = validateServiceDescription(input);
    checkSchemasCompile(desc);
    if (options.pinImage) desc.image = await options.pinImage(desc.image, '/image');
    const previous = table.service(desc.name);
    const record = await registry.putService(desc);
    table.putService(record.description);
    options.resetCooldown(desc.name);
    deployer.prepare(desc.name);
    const created = previous === undefined || previous.version !== record.version;
    if (previous !== undefined && previous.version !== record.version) {
      // A new version: the old version's instances are drained and removed; the next
      // message deploys the new one. undeploy logs its own failures.
      for (const ep of table.endpoints(desc.name).filter((e) => e.version !== record.version)) void deployer.undeploy(ep, 'undeployed');
      dropWarm(desc.name, record.version);
    }
    void registry
      .appendEvent({ kind: 'service-registered', service: desc.name, detail: { version: desc.version } })
      .catch(logWriteFailure(log, 'the service-registered event', { service: desc.name }));
    return { service: record, created };
  }

  async function removeService(name: string) {
    const live = await registry.removeService(name);
    table.removeService(name);
    options.failWaiting(name, `service ${name} was removed`); // messages waiting for it are answered now
    await Promise.all(live.map((d) => deployer.stopDeployment(d, 'service removed')));
    dropWarm(name);
    void registry
      .appendEvent({ kind: 'service-removed', service: name, detail: { stopped: live.length } })
      .catch(logWriteFailure(log, 'the service-removed event', { service: name }));
    return { stopped: live.length };
  }

  /**
   * Hosts keep containers created ahead only for current versions: they are told when a
   * service goes or changes version. Told, because a host cannot tell a removed service
   * from one scaled to zero (whose warm container is exactly what its next message
   * needs). A host that misses it (unreachable now) keeps the container until its pool
   * needs the room or it deploys a newer version, which supersedes it there.
   */
  function dropWarm(service: string, keepVersion?: string): void {
    for (const host of pool.list()) {
      if (host.state === 'dead') continue;
      host.client.dropWarm(service, keepVersion).catch(logHostFailure(log, 'telling a host to drop warm containers', { host: host.id, service }));
    }
  }

  async function deploy(service: string, o: { count?: number; reason?: DeployReason; exclude?: readonly string[] } = {}) {
    if (table.service(service) === undefined) throw new ShoalError('not-found', `no service named ${JSON.stringify(service)}`, { field: 'name' });
    return deployer.deploy(service, { count: o.count ?? 1, reason: o.reason ?? 'scale', ...(o.exclude === undefined ? {} : { exclude: o.exclude }) });
  }

  return {
    registerService,
    removeService,
    deploy,
    // The reconciler may have healed it meanwhile: deploy only when none is up.
    ensureInstance: async (service) => (table.endpoints(service).length === 0 ? deploy(service, { count: 1, reason: 'scale' }) : undefined),
    async registerHost(request) {
      const host = await pool.register(request);
      options.resetCooldown(); // a new host may take what failed before
      return host;
    },
    removeHost: (id) => pool.remove(id),
  };
}

/** Each operation's input schema must compile (patterns are regular expressions, $refs resolve). */
function checkSchemasCompile(desc: ServiceDescription): void {
  for (const [op, spec] of Object.entries(desc.operations)) {
    try {
      compileService({ ...desc, operations: { [op]: spec } });
    } catch (e) {
      const field = `/operations/${op}/input`;
      throw new ShoalError('invalid', `service description: ${field}: cannot be used to check messages: ${(e as Error).message}`, { field });
    }
  }
}
