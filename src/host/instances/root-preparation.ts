// Root preparation: an instance's directories, then its layers (pulled and unpacked when
// missing, leased from the layer cache), then its root (an overlay mount, or the flat
// tree for drivers without isolation), then the spec its driver starts. Each step is
// recorded on the instance as it happens, so teardown knows what to undo.
import type { Driver, InstanceSpec } from '../drivers/driver.ts';
import { boundsRoot, idMappingOf } from '../drivers/driver.ts';
import type { HostState } from '../host-state.ts';
import type { BlobFetcher, CacheMode, LayerCache, PreparedRoot } from '../layer-cache.ts';
import type { LiveInstance } from './instance-store.ts';
import type { Mounter } from '../ports.ts';
import { buildSpec, diskBytes, resolveUser } from './instance-spec.ts';
import type { RootfsSpec } from '../../protocol/index.ts';

export interface RootPreparationDeps {
  state: Pick<HostState, 'create'>;
  save(l: LiveInstance): Promise<void>;
  layerCache: Pick<LayerCache, 'prepare'>;
  mounter: Pick<Mounter, 'mountOverlay'>;
}

export interface PreparedInstance {
  spec: InstanceSpec;
  user: { uid: number; gid: number };
  /** performance.now() around mounting, for the timeline. */
  mountStart: number;
  mountEnd: number;
}

/**
 * Drivers without isolation run from a flat tree, and so do isolates (their driver only
 * reads the bundle; an isolate has no file system to write to); the others from an overlay mount.
 */
export function cacheModeOf(driver: Pick<Driver, 'capabilities'>): CacheMode {
  return driver.capabilities.isolation === 'none' || driver.capabilities.isolation === 'isolate' ? 'flat' : 'overlay';
}

/** `onPulled` marks the end of pull+unpack for the timeline. */
export async function prepareInstanceRoot(
  deps: RootPreparationDeps,
  l: LiveInstance,
  rootfs: RootfsSpec,
  fetchBlob: BlobFetcher,
  onPulled: (lease: PreparedRoot) => void = () => {},
): Promise<PreparedInstance> {
  const { plan, id } = l.record;
  await deps.state.create(id);
  l.record.rootfs = rootfs;
  await deps.save(l);
  const mode = cacheModeOf(l.driver);
  l.lease = await deps.layerCache.prepare({ manifestDigest: rootfs.manifestDigest, layers: rootfs.layers }, fetchBlob, mode);
  onPulled(l.lease);

  const mountStart = performance.now();
  await mountRoot(deps, l, l.lease, mode);
  await deps.save(l);
  const mountEnd = performance.now();

  const rootPath = l.record.rootPath!;
  const user = await resolveUser(rootPath, rootfs.process.user);
  // The socket dirs stay the host's (the instance is handed its listening socket's fd).
  const spec = buildSpec({ id, plan, rootfs, rootPath, paths: l.paths, user, hostPaths: mode === 'flat', boundedRoot: boundsRoot(l.driver) });
  return { spec, user, mountStart, mountEnd };
}

async function mountRoot(deps: RootPreparationDeps, l: LiveInstance, lease: PreparedRoot, mode: CacheMode): Promise<void> {
  if (mode === 'overlay') {
    const paths = l.paths;
    // overlayfs lists the topmost lower directory first
    await deps.mounter.mountOverlay({
      lowerDirs: [...lease.lowerDirs].reverse(),
      upperDir: paths.upper,
      workDir: paths.work,
      target: paths.rootfs,
      // Bounded (ENOSPC past it) and, for a driver with a user namespace, id-mapped.
      sizeBytes: boundsRoot(l.driver) ? diskBytes(l.record.plan) : undefined,
      idmap: idMappingOf(l.driver),
    });
    l.record.mounted = true;
    l.record.rootPath = paths.rootfs;
  } else {
    l.record.rootPath = lease.flatDir;
  }
}
