// Recovery after a host restart: the records on disk are matched with what each driver
// still runs. A live instance is re-adopted (its reservation, layer lease and import
// sockets taken again, its exit watched); anything else is torn down and its directory
// removed, as are directories without a record and stray mounts under the instances dir.
import { readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Driver, RunningInstance } from '../drivers/driver.ts';
import type { Admission } from '../admission.ts';
import type { HostState, InstanceRecord } from '../host-state.ts';
import type { LayerCache } from '../layer-cache.ts';
import type { InstanceStore, LiveInstance } from './instance-store.ts';
import type { Logger, Mounter, OpenImportSockets } from '../ports.ts';
import { cacheModeOf } from './root-preparation.ts';
import { NOBODY, resolveUser } from './instance-spec.ts';
import type { DriverName } from '../drivers/index.ts';

export interface RecoveryDeps {
  state: Pick<HostState, 'list' | 'paths' | 'remove' | 'instancesDir'>;
  store: Pick<InstanceStore, 'entry' | 'add' | 'delete' | 'all' | 'save'>;
  /** Every driver this host has, standby ones included. */
  drivers: Partial<Record<DriverName, Driver>>;
  mounter: Mounter;
  admission: Pick<Admission, 'adopt'>;
  layerCache: Pick<LayerCache, 'retain'>;
  openImportSockets: OpenImportSockets;
  teardown(l: LiveInstance): Promise<void>;
  watchExit(l: LiveInstance, running: RunningInstance): void;
  log: Logger;
}

interface Found {
  status: string;
  instance: RunningInstance | undefined;
}

export async function recoverInstances(deps: RecoveryDeps): Promise<{ adopted: string[]; cleaned: string[] }> {
  const { records, orphans } = await deps.state.list();
  const found = await findRunning(deps, records);
  const adopted: string[] = [];
  const cleaned: string[] = [];
  for (const r of records) {
    if (await readoptOrClean(deps, r, found.get(r.id))) adopted.push(r.id);
    else cleaned.push(r.id);
  }
  for (const id of orphans) {
    await cleanOrphan(deps, id);
    cleaned.push(id);
  }
  await unmountStrays(deps);
  return { adopted, cleaned };
}

/** Asks each driver which of its instances still run. */
async function findRunning(deps: RecoveryDeps, records: InstanceRecord[]): Promise<Map<string, Found>> {
  const byDriver = new Map<Driver, InstanceRecord[]>();
  for (const r of records) {
    const d = deps.drivers[r.driver];
    if (!d) {
      deps.log.warn({ instance: r.id, driver: r.driver }, 'instance of a driver this host no longer has: cleaning it up');
      continue;
    }
    byDriver.set(d, [...(byDriver.get(d) ?? []), r]);
  }
  const found = new Map<string, Found>();
  for (const d of new Set(Object.values(deps.drivers))) {
    const known = (byDriver.get(d) ?? []).map((r) => ({ id: r.id, stateDir: deps.state.paths(r.id).stateDir }));
    try {
      for (const rec of await d.recover(known)) found.set(rec.id, { status: rec.status, instance: rec.instance });
    } catch (e) {
      deps.log.error({ driver: d.name, err: String(e) }, 'driver recovery failed: its instances are cleaned up');
    }
  }
  return found;
}

/** True when re-adopted; otherwise everything it left is cleaned up. */
async function readoptOrClean(deps: RecoveryDeps, r: InstanceRecord, f: Found | undefined): Promise<boolean> {
  const driver = deps.drivers[r.driver];
  // Without its driver only the host-side parts can be cleaned up.
  const l = deps.store.entry(r, driver ?? ({ name: r.driver, destroy: async () => {} } as unknown as Driver), f?.instance);
  const alive = driver !== undefined && f?.instance !== undefined && f.status !== 'stopped' && (r.state === 'ready' || r.state === 'paused') && r.rootfs !== undefined;
  if (alive) {
    try {
      await readopt(deps, l, f.status, f.instance!);
      deps.log.info({ instance: r.id }, 're-adopted a live instance');
      return true;
    } catch (e) {
      deps.log.warn({ instance: r.id, err: String(e) }, 'cannot re-adopt: cleaning up');
      deps.store.delete(r.id);
    }
  }
  await deps.teardown(l).catch((e: unknown) => deps.log.error({ instance: r.id, err: String(e) }, 'cleanup during recovery'));
  await deps.state.remove(r.id).catch((e: unknown) => deps.log.error({ instance: r.id, err: String(e) }, 'removing the instance dir during recovery failed'));
  return false;
}

async function readopt(deps: RecoveryDeps, l: LiveInstance, status: string, running: RunningInstance): Promise<void> {
  const r = l.record;
  const paths = l.paths;
  const rootfs = r.rootfs!;
  if (r.mounted && !(await deps.mounter.listMounts(paths.rootfs)).includes(paths.rootfs)) {
    throw new Error(`its root ${paths.rootfs} is no longer mounted`);
  }
  l.reservation = deps.admission.adopt(r.id, { memoryMb: r.plan.resources.memoryMb, cpuMillis: r.plan.resources.cpuMillis });
  l.lease = deps.layerCache.retain({ manifestDigest: rootfs.manifestDigest, layers: rootfs.layers }, cacheModeOf(l.driver));
  if (r.plan.imports && r.plan.imports.length > 0) {
    await clearSockets(paths.importsDir);
    const owner = await resolveUser(r.rootPath ?? paths.rootfs, rootfs.process.user).catch((e: unknown) => {
      deps.log.warn({ instance: r.id, err: String(e) }, 'cannot resolve the image user again; import sockets go to nobody');
      return NOBODY;
    });
    l.imports = await deps.openImportSockets(paths.importsDir, r.plan.imports, { uid: owner.uid, gid: owner.gid });
  }
  r.state = status === 'paused' ? 'paused' : 'ready';
  deps.store.add(l);
  deps.watchExit(l, running);
  await deps.store.save(l);
}

/** An instance dir without a readable record: unmount, destroy with every driver, remove. */
async function cleanOrphan(deps: RecoveryDeps, id: string): Promise<void> {
  const paths = deps.state.paths(id);
  for (const m of (await deps.mounter.listMounts(paths.dir)).sort().reverse()) {
    await deps.mounter.unmountOverlay(m).catch((e: unknown) => deps.log.error({ instance: id, mount: m, err: String(e) }, 'cannot unmount'));
  }
  for (const d of new Set(Object.values(deps.drivers))) {
    await d.destroy(id, paths.stateDir).catch((e: unknown) => deps.log.warn({ instance: id, driver: d.name, err: String(e) }, 'driver destroy of an orphan failed'));
  }
  await deps.state.remove(id);
}

/** Stray mounts under the instances dir that belong to no live instance. */
async function unmountStrays(deps: RecoveryDeps): Promise<void> {
  const keep = new Set(deps.store.all().filter((l) => l.record.mounted).map((l) => l.paths.rootfs));
  for (const m of (await deps.mounter.listMounts(deps.state.instancesDir)).sort().reverse()) {
    if (keep.has(m)) continue;
    deps.log.warn({ mount: m }, 'unmounting a stray mount');
    await deps.mounter.unmountOverlay(m).catch((e: unknown) => deps.log.error({ mount: m, err: String(e) }, 'cannot unmount'));
  }
}

/** Sockets left by the previous host process; the new ones take their names. */
async function clearSockets(dir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  for (const n of names) {
    if (!n.endsWith('.sock')) continue;
    await unlink(join(dir, n)).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
  }
}
