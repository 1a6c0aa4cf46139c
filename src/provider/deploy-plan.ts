// From a service and its resolved image to placements and plans, as plain functions over
// data: the placement views of the hosts (their latest reports plus this service's
// replicas on each), the placement request, choosing `count` hosts (updating the views as
// if each placement happened), and the plan a host is sent.
import { place, type HostView, type PlacementRequest, type RequiredCapabilities } from './placement/index.ts';
import type { PoolHost } from './host-pool.ts';
import type { RouteEndpoint, ServiceEntry } from './routing-table.ts';
import type { RemoteImage } from '../image/index.ts';
import { ShoalError, type DeploymentPlan, type ImportBinding, type DriverName, type Isolation } from '../protocol/index.ts';

/** Drivers that run component images (bundles without a runtime), by their isolation. */
const COMPONENT_ISOLATIONS: ReadonlySet<Isolation> = new Set(['isolate', 'wasm']);

/**
 * The driver a service's instances need: a component image's own driver (its label),
 * else the service's `driver` (unset: the host's default). A service that names another
 * driver than its component image is refused.
 */
export function requiredDriver(entry: ServiceEntry, image: RemoteImage): DriverName | undefined {
  const named = entry.description.driver;
  if (image.driver === undefined) return named;
  if (named !== undefined && named !== image.driver) {
    throw new ShoalError('invalid', `service ${entry.name}: its image is a ${image.driver} component, which only the ${image.driver} driver runs, but the service names driver ${named}`, {
      field: 'driver',
    });
  }
  return image.driver;
}

export interface Pick {
  host: string;
  driver: string;
  reason: string;
}

/** The placement view of each placeable host, for a service with `endpoints` ready. */
export function hostViews(hosts: readonly PoolHost[], endpoints: readonly RouteEndpoint[], driver: DriverName | undefined): Map<string, HostView> {
  const replicas = new Map<string, number>();
  for (const ep of endpoints) replicas.set(ep.hostId, (replicas.get(ep.hostId) ?? 0) + 1);
  const views = new Map<string, HostView>();
  for (const h of hosts) {
    const r = h.report;
    if (r === undefined) continue;
    views.set(h.id, {
      id: h.id,
      state: h.state,
      labels: h.labels,
      capacity: { ...r.capacity },
      free: { ...r.free },
      load: { instances: r.load.instances, inFlight: r.load.inFlight },
      cachedLayers: new Set(r.layers.map((l) => l.digest)),
      drivers: r.drivers
        // No driver asked for: an ordinary image, which component drivers cannot run.
        .filter((d) => (driver === undefined ? !COMPONENT_ISOLATIONS.has(d.capabilities.isolation) : d.name === driver))
        .map((d) => ({
          key: d.name,
          isDefault: d.default,
          healthy: d.fingerprint.healthy,
          capabilities: d.capabilities,
        })),
      replicas: replicas.get(h.id) ?? 0,
    });
  }
  return views;
}

export function placementRequest(entry: ServiceEntry, image: RemoteImage, exclude: readonly string[]): PlacementRequest {
  const d = entry.description;
  const req = d.placement.requires;
  // A program on TCP $PORT needs a driver that runs the port bridge (runc, process).
  const port = d.listen === undefined ? {} : { servesPort: true };
  const capabilities: RequiredCapabilities | undefined =
    req === undefined
      ? d.listen === undefined
        ? undefined
        : port
      : {
          ...(req.isolation === undefined ? {} : { isolation: [req.isolation] }),
          ...(req.canPause === undefined ? {} : { canPause: req.canPause }),
          ...(req.canSnapshot === undefined ? {} : { canSnapshot: req.canSnapshot }),
          ...(req.canMigrate === undefined ? {} : { canMigrate: req.canMigrate }),
          ...(req.canClone === undefined ? {} : { canClone: req.canClone }),
          ...port,
        };
  return {
    service: d.name,
    resources: { memoryMb: d.resources.memoryMb, cpuMillis: d.resources.cpuMillis },
    layers: image.layers.map((l) => ({ digest: l.digest, size: l.size })),
    placement: {
      ...(d.placement.policy === undefined ? (d.placement.hosts ? { policy: 'host-list' as const } : {}) : { policy: d.placement.policy }),
      ...(d.placement.hosts === undefined ? {} : { hosts: d.placement.hosts }),
      ...(d.placement.labels === undefined ? {} : { labels: d.placement.labels }),
      ...(capabilities === undefined ? {} : { capabilities }),
    },
    exclude,
  };
}

/** Chooses up to `count` hosts; `refusal` says why the rest could not be placed. */
export function choosePlacements(
  entry: ServiceEntry,
  image: RemoteImage,
  count: number,
  exclude: readonly string[],
  views: Map<string, HostView>,
  rand: () => number,
): { picks: Pick[]; refusal: string | undefined } {
  const picks: Pick[] = [];
  let refusal: string | undefined;
  if (image.driver !== undefined && [...views.values()].every((v) => v.drivers.length === 0)) {
    const name = `${image.repository}@${image.manifestDigest}`;
    return { picks, refusal: `image ${name} is a ${image.driver} component: no host in the pool offers the ${image.driver} driver (start a host with --driver ${image.driver})` };
  }
  for (let i = 0; i < count; i++) {
    // With several replicas at once, prefer distinct hosts: spread unless told otherwise.
    const req = placementRequest(entry, image, exclude);
    if (count > 1 && req.placement.policy === undefined) req.placement.policy = 'spread';
    const decision = place(req, [...views.values()], rand);
    if (!decision.ok) {
      refusal = decision.message;
      break;
    }
    picks.push({ host: decision.host, driver: decision.driver, reason: decision.reason });
    const v = views.get(decision.host)!;
    const { memoryMb, cpuMillis } = entry.description.resources;
    views.set(decision.host, {
      ...v,
      replicas: v.replicas + 1,
      free: { memoryMb: v.free.memoryMb - memoryMb, cpuMillis: v.free.cpuMillis - cpuMillis, instances: v.free.instances - 1 },
      load: { ...v.load, instances: v.load.instances + 1 },
    });
  }
  return { picks, refusal };
}

export function planFor(
  entry: ServiceEntry,
  image: RemoteImage,
  driver: string,
  store: string,
  readinessTimeoutMs: number,
  imports: ImportBinding[] | undefined,
): DeploymentPlan {
  const d = entry.description;
  return {
    service: { name: d.name, version: d.version },
    image: `${image.repository}@${image.manifestDigest}`,
    store,
    driver,
    resources: { ...d.resources },
    readiness: { timeoutMs: readinessTimeoutMs, ...(d.readiness === undefined ? {} : { path: d.readiness.path }) },
    ...(d.listen === undefined ? {} : { listen: { port: d.listen.port } }),
    // Route tokens reach the declared operations only (the host checks each path against them).
    operations: Object.keys(d.operations),
    ...(imports === undefined || imports.length === 0 ? {} : { imports }),
  };
}
