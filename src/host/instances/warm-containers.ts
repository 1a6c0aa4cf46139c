// Warm containers: the warm pool (warm-pool.ts) filled with containers created ahead
// (driver.prepare) for plans just deployed, so the next deployment of the same plan only
// starts the program. Each is a prepared instance root plus its spec; it takes on the
// deployment's identity when taken. Destroyed on close, cleaned up on recovery.
// A second pool holds containers made for a template (template-pool.ts): a service's
// first deployment takes one, and its own layer is added before the program starts.
import { boundsRoot, canPrepare, type Driver, type InstanceSpec } from '../drivers/driver.ts';
import type { HostState } from '../host-state.ts';
import { newInstanceId } from '../host-state.ts';
import type { BlobFetcher, LayerCache } from '../layer-cache.ts';
import { newRecord, type InstanceStore, type LiveInstance } from './instance-store.ts';
import type { Logger } from '../ports.ts';
import { createWarmPool } from './warm-pool.ts';
import type { PreparedInstance } from './root-preparation.ts';
import { buildSpec, diskBytes } from './instance-spec.ts';
import { canPrepareGeneric, graftMounts, layersParent, templateKey, templatePlan, templateRootfs, type GraftLayers } from './template-pool.ts';
import type { DeploymentPlan, PullStats, RootfsSpec } from '../../protocol/index.ts';
import type { DriverName } from '../drivers/index.ts';
import { isShoalError } from '../../protocol/index.ts';

export interface WarmContainer {
  live: LiveInstance;
  spec: InstanceSpec;
  user: { uid: number; gid: number };
  /** A template container: adds the service's layers; to be called once, before start. */
  attach?: () => Promise<void>;
  /** What leasing the service's layers fetched (a template container); none otherwise. */
  pull?: PullStats;
}

export interface WarmContainersDeps {
  store: Pick<InstanceStore, 'entry'>;
  state: Pick<HostState, 'remove'>;
  prepareRoot(l: LiveInstance, rootfs: RootfsSpec, fetchBlob: BlobFetcher): Promise<PreparedInstance>;
  teardown(l: LiveInstance): Promise<void>;
  log: Logger;
  /**
   * perImage per plan (default 1, 0 turns it off), max in all (default 4); perTemplate
   * per template, user and resources (default 1, or 0 when perImage is 0), maxTemplates
   * in all (default 2).
   */
  limits?: { perImage?: number; max?: number; perTemplate?: number; maxTemplates?: number };
  /** The layer cache: leases the service's layers for a template container (no template pool without it). */
  layers?: Pick<LayerCache, 'prepare'>;
}

export interface WarmContainers {
  take(driver: Driver, plan: DeploymentPlan, rootfs: RootfsSpec): WarmContainer | undefined;
  /**
   * A template container for the plan's image, its service's layer leased and ready to be
   * added (attach); undefined when none is ready or the image does not qualify.
   */
  takeTemplate(driver: Driver, plan: DeploymentPlan, rootfs: RootfsSpec, fetchBlob: BlobFetcher): Promise<WarmContainer | undefined>;
  /**
   * Starts one more for the plan; containers of the same service's other versions go
   * (superseded). Also one more for its template when the image qualified at takeTemplate.
   */
  refill(driver: Driver, plan: DeploymentPlan, rootfs: RootfsSpec, fetchBlob: BlobFetcher): void;
  /**
   * Discards the service's containers except those of `keepVersion` (none kept when
   * absent: the service was removed), also those being made now. Returns how many went.
   */
  drop(service: string, keepVersion?: string): number;
  /** What the pool holds (for the host report). */
  list(): Array<{ instance: string; service: DeploymentPlan['service'] }>;
  close(): Promise<void>;
}

/** Containers are interchangeable when everything that shaped them is equal. */
export function warmKey(driver: Pick<Driver, 'name'>, plan: DeploymentPlan, rootfs: Pick<RootfsSpec, 'manifestDigest'>): string {
  return JSON.stringify([driver.name, rootfs.manifestDigest, plan.service, plan.args ?? null, plan.env ?? {}, plan.resources]);
}

/** Service layers whose fitness for the template pool is remembered. */
const MAX_REMEMBERED = 4096;

export function createWarmContainers(deps: WarmContainersDeps): WarmContainers {
  let closing = false;
  const discardLive = async (live: LiveInstance): Promise<void> => {
    const instance = live.record.id;
    await deps.teardown(live).catch((e: unknown) => deps.log.error({ instance, err: String(e) }, 'discarding a warm container'));
    await deps.state.remove(instance).catch((e: unknown) => deps.log.error({ instance, err: String(e) }, 'removing a warm container\'s directory failed'));
  };
  const pool = createWarmPool<WarmContainer>({
    perKey: deps.limits?.perImage ?? 1,
    max: deps.limits?.max ?? 4,
    discard: (w) => discardLive(w.live),
    log: deps.log,
  });
  const templates = createWarmPool<WarmContainer>({
    perKey: deps.layers ? (deps.limits?.perTemplate ?? (deps.limits?.perImage === 0 ? 0 : 1)) : 0,
    max: deps.limits?.maxTemplates ?? 2,
    discard: (w) => discardLive(w.live),
    log: deps.log,
  });
  /** Per template key + service layer: the mounts that add it, or undefined (does not qualify). */
  const grafts = new Map<string, GraftLayers['mounts'] | undefined>();
  const graftKey = (key: string, rootfs: RootfsSpec): string => `${key}\0${rootfs.layers.at(-1)?.digest ?? ''}`;
  // A driver that cannot prepare here (runc without its shim) is not asked again.
  const cannotPrepare = new Set<Driver>();
  // Services dropped while containers of theirs may be being made: service → version kept.
  const dropped = new Map<string, string | undefined>();
  const unwanted = (service: DeploymentPlan['service']): boolean =>
    dropped.has(service.name) && dropped.get(service.name) !== service.version;
  const drop = (service: string, keepVersion?: string): number => {
    dropped.set(service, keepVersion);
    return pool.drop((w) => w.live.record.plan.service.name === service && w.live.record.plan.service.version !== keepVersion);
  };

  const create = async (driver: Driver, plan: DeploymentPlan, rootfs: RootfsSpec, fetchBlob: BlobFetcher): Promise<WarmContainer | undefined> => {
    if (!canPrepare(driver)) return undefined;
    const live = deps.store.entry(newRecord(newInstanceId(plan.service.name), plan, driver.name as DriverName, Date.now()), driver);
    try {
      const { spec, user } = await deps.prepareRoot(live, rootfs, fetchBlob);
      await driver.prepare(spec);
      if (unwanted(plan.service)) {
        await discardLive(live); // its service was removed or superseded while it was made
        return undefined;
      }
      return { live, spec, user };
    } catch (e) {
      if (isShoalError(e) && e.code === 'unsupported') cannotPrepare.add(driver);
      if (!closing) deps.log.warn({ instance: live.record.id, err: String(e) }, 'could not pre-create a container');
      await discardLive(live);
      return undefined;
    }
  };

  /** A container with the template's layers only and the driver's generic process. */
  const createTemplate = async (driver: Driver, plan: DeploymentPlan, rootfs: RootfsSpec, fetchBlob: BlobFetcher): Promise<WarmContainer | undefined> => {
    if (!canPrepareGeneric(driver)) return undefined;
    const base = templatePlan(plan);
    const live = deps.store.entry(newRecord(newInstanceId('pool'), base, driver.name as DriverName, Date.now()), driver);
    try {
      const { spec, user } = await deps.prepareRoot(live, templateRootfs(rootfs), fetchBlob);
      await driver.prepareGeneric(spec, live.lease && live.lease.lowerDirs.length > 0 ? { graftParent: layersParent(live.lease.lowerDirs) } : {});
      return { live, spec, user };
    } catch (e) {
      if (isShoalError(e) && e.code === 'unsupported') cannotPrepare.add(driver);
      if (!closing) deps.log.warn({ instance: live.record.id, err: String(e) }, 'could not pre-create a template container');
      await discardLive(live);
      return undefined;
    }
  };

  /** Whether (and how) the image's service layer can be added to its template's containers; remembered. */
  const graftsFor = async (key: string, rootfs: RootfsSpec, lowerDirs: string[]): Promise<GraftLayers['mounts'] | undefined> => {
    const gk = graftKey(key, rootfs);
    if (!grafts.has(gk)) {
      const mounts = await graftMounts(lowerDirs);
      if (grafts.size >= MAX_REMEMBERED) grafts.clear(); // a bound; forgetting only costs a look again
      grafts.set(gk, mounts);
    }
    return grafts.get(gk);
  };
  const knownUnfit = (key: string, rootfs: RootfsSpec): boolean => grafts.has(graftKey(key, rootfs)) && grafts.get(graftKey(key, rootfs)) === undefined;

  const takeTemplate = async (driver: Driver, plan: DeploymentPlan, rootfs: RootfsSpec, fetchBlob: BlobFetcher): Promise<WarmContainer | undefined> => {
    const key = templateKey(driver, plan, rootfs);
    if (closing || !deps.layers || key === undefined || !canPrepareGeneric(driver) || cannotPrepare.has(driver)) return undefined;
    // None ready (or the image does not qualify): the ordinary path, which leases (and counts) the layers itself.
    if (!templates.has(key) || knownUnfit(key, rootfs)) return undefined;
    // The whole image's layers, leased for the instance (those of the template included).
    const lease = await deps.layers.prepare({ manifestDigest: rootfs.manifestDigest, layers: rootfs.layers }, fetchBlob, 'overlay');
    let mounts: GraftLayers['mounts'] | undefined;
    try {
      mounts = await graftsFor(key, rootfs, lease.lowerDirs);
    } catch (e) {
      lease.release();
      throw e;
    }
    const w = mounts ? templates.take(key) : undefined;
    if (!w || !mounts) {
      lease.release();
      return undefined;
    }
    const live = w.live;
    live.lease?.release();
    live.lease = lease;
    live.record.rootfs = rootfs;
    const spec = buildSpec({ id: live.record.id, plan, rootfs, rootPath: live.record.rootPath!, paths: live.paths, user: w.user, hostPaths: false, boundedRoot: boundsRoot(driver) });
    const layers: GraftLayers = { parent: layersParent(lease.lowerDirs), mounts, sizeBytes: diskBytes(plan) };
    return { live, spec, user: w.user, attach: () => driver.graft(live.record.id, layers), pull: lease.stats };
  };

  return {
    take: (driver, plan, rootfs) => pool.take(warmKey(driver, plan, rootfs)),
    takeTemplate,
    refill(driver, plan, rootfs, fetchBlob) {
      if (closing) return;
      // A deployment of this version: it is current here (again, if it was dropped before).
      if (unwanted(plan.service)) dropped.delete(plan.service.name);
      drop(plan.service.name, plan.service.version);
      if (!canPrepare(driver) || cannotPrepare.has(driver)) return;
      pool.refill(warmKey(driver, plan, rootfs), () => create(driver, plan, rootfs, fetchBlob));
      const key = templateKey(driver, plan, rootfs);
      const layers = deps.layers;
      if (key === undefined || !layers || !canPrepareGeneric(driver) || knownUnfit(key, rootfs)) return;
      templates.refill(key, async () => {
        // Whether the image qualifies, once per service layer (its layers are cached now: no pull).
        if (!grafts.has(graftKey(key, rootfs))) {
          const lease = await layers.prepare({ manifestDigest: rootfs.manifestDigest, layers: rootfs.layers }, fetchBlob, 'overlay');
          try {
            if (!(await graftsFor(key, rootfs, lease.lowerDirs))) return undefined;
          } finally {
            lease.release();
          }
        }
        return createTemplate(driver, plan, rootfs, fetchBlob);
      });
    },
    drop,
    list: () =>
      [...pool.entries(), ...templates.entries()].map((w) => ({ instance: w.live.record.id, service: w.live.record.plan.service })),
    close() {
      closing = true;
      return Promise.all([pool.close(), templates.close()]).then(() => undefined);
    },
  };
}
