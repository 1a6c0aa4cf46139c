// Warm containers: the warm pool (warm-pool.ts) filled with containers created ahead
// (driver.prepare) for plans just deployed, so the next deployment of the same plan only
// starts the program. Each is a prepared instance root plus its spec; it takes on the
// deployment's identity when taken. Destroyed on close, cleaned up on recovery.
import { canPrepare, type Driver, type InstanceSpec } from '../drivers/driver.ts';
import type { HostState } from '../host-state.ts';
import { newInstanceId } from '../host-state.ts';
import type { BlobFetcher } from '../layer-cache.ts';
import { newRecord, type InstanceStore, type LiveInstance } from './instance-store.ts';
import type { Logger } from '../ports.ts';
import { createWarmPool } from './warm-pool.ts';
import type { PreparedInstance } from './root-preparation.ts';
import type { DeploymentPlan } from '../../protocol/deployment.ts';
import type { DriverName } from '../drivers/index.ts';
import type { RootfsSpec } from '../../protocol/oci.ts';
import { isShoalError } from '../../protocol/errors.ts';

export interface WarmContainer {
  live: LiveInstance;
  spec: InstanceSpec;
  user: { uid: number; gid: number };
}

export interface WarmContainersDeps {
  store: Pick<InstanceStore, 'entry'>;
  state: Pick<HostState, 'remove'>;
  prepareRoot(l: LiveInstance, rootfs: RootfsSpec, fetchBlob: BlobFetcher): Promise<PreparedInstance>;
  teardown(l: LiveInstance): Promise<void>;
  log: Logger;
  /** perImage per plan (default 1, 0 turns it off), max in all (default 4). */
  limits?: { perImage?: number; max?: number };
}

export interface WarmContainers {
  take(driver: Driver, plan: DeploymentPlan, rootfs: RootfsSpec): WarmContainer | undefined;
  refill(driver: Driver, plan: DeploymentPlan, rootfs: RootfsSpec, fetchBlob: BlobFetcher): void;
  close(): Promise<void>;
}

/** Containers are interchangeable when everything that shaped them is equal. */
export function warmKey(driver: Pick<Driver, 'name'>, plan: DeploymentPlan, rootfs: Pick<RootfsSpec, 'manifestDigest'>): string {
  return JSON.stringify([driver.name, rootfs.manifestDigest, plan.service, plan.args ?? null, plan.env ?? {}, plan.resources]);
}

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
  // A driver that cannot prepare here (runc without its shim) is not asked again.
  const cannotPrepare = new Set<Driver>();

  const create = async (driver: Driver, plan: DeploymentPlan, rootfs: RootfsSpec, fetchBlob: BlobFetcher): Promise<WarmContainer | undefined> => {
    if (!canPrepare(driver)) return undefined;
    const live = deps.store.entry(newRecord(newInstanceId(plan.service.name), plan, driver.name as DriverName, Date.now()), driver);
    try {
      const { spec, user } = await deps.prepareRoot(live, rootfs, fetchBlob);
      await driver.prepare(spec);
      return { live, spec, user };
    } catch (e) {
      if (isShoalError(e) && e.code === 'unsupported') cannotPrepare.add(driver);
      if (!closing) deps.log.warn({ instance: live.record.id, err: String(e) }, 'could not pre-create a container');
      await discardLive(live);
      return undefined;
    }
  };

  return {
    take: (driver, plan, rootfs) => pool.take(warmKey(driver, plan, rootfs)),
    refill(driver, plan, rootfs, fetchBlob) {
      if (closing || !canPrepare(driver) || cannotPrepare.has(driver)) return;
      pool.refill(warmKey(driver, plan, rootfs), () => create(driver, plan, rootfs, fetchBlob));
    },
    close() {
      closing = true;
      return pool.close();
    },
  };
}
