// The template pool's rules: which deployments a container pre-created for a template can
// serve, and how the service's own layers are then added. A template is every layer of an
// image but its last (the runtime an image was built on, e.g. the Node template); the last
// layer is the service's own. A template container is created with the template's layers
// only, a fresh empty writable layer and a generic process (the driver's runner), so it
// holds nothing of any service; the one deployment that takes it adds its service's layer
// (each top-level directory of that layer mounted at its place inside the container, over
// a writable layer of its own) and names the program to run. It is never given back.
//
// Served only when the result is the same root as the ordinary path's: the service layer
// holds top-level directories only (no whiteouts, no files), none of which the template
// has but as an empty directory (a template's working dir, /app for the Node template:
// the service's directory hides it in both ways), and none where the image's users are
// looked up (/etc) or where the runtime mounts its own file systems.
import { createHash } from 'node:crypto';
import { lstat, readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Driver, InstanceSpec, PreparingDriver } from '../drivers/driver.ts';
import type { DeploymentPlan, RootfsSpec } from '../../protocol/index.ts';

/** A service's layers added to a template container: /<name> ← lowerDirs (top first), writable, bounded. */
export interface GraftLayers {
  /** A directory holding every lower dir. */
  parent: string;
  mounts: Array<{ name: string; lowerDirs: string[] }>;
  sizeBytes: number;
}

/** A driver that pre-creates containers for a template and adds a service's layers before start. */
export interface TemplatePreparingDriver extends PreparingDriver {
  /**
   * Creates the container with a generic process; start() later names the program.
   * graftParent: where graft()'s layers will be (the driver may get ready for them).
   */
  prepareGeneric(spec: InstanceSpec, options?: { graftParent?: string }): Promise<void>;
  /** Adds the layers inside the container made by prepareGeneric, before its start. */
  graft(id: string, layers: GraftLayers): Promise<void>;
}

export function canPrepareGeneric(d: Driver): d is TemplatePreparingDriver {
  const x = d as Partial<TemplatePreparingDriver>;
  return typeof x.prepareGeneric === 'function' && typeof x.graft === 'function';
}

/** Top-level names a service layer may not bring: looked up by the host (etc) or mounted over by the runtime. */
const RESERVED = new Set(['etc', 'dev', 'proc', 'sys', 'tmp', 'run', 'lost+found']);

/** The template of an image: all its layers but the last; undefined for a one-layer image. */
export function templateLayers(rootfs: Pick<RootfsSpec, 'layers'>): RootfsSpec['layers'] | undefined {
  return rootfs.layers.length >= 2 ? rootfs.layers.slice(0, -1) : undefined;
}

/**
 * Template containers are interchangeable when everything that shaped them is equal: the
 * template's layers, the user the process runs as (fixed at creation) and the resources.
 * Not the service, its program, arguments or environment: those come at start.
 */
export function templateKey(driver: Pick<Driver, 'name'>, plan: DeploymentPlan, rootfs: RootfsSpec): string | undefined {
  const layers = templateLayers(rootfs);
  if (!layers) return undefined;
  return JSON.stringify(['template', driver.name, layers.map((l) => l.digest), rootfs.process.user ?? null, plan.resources]);
}

/** What a template container is prepared from: the template's layers, the image's process (its user). */
export function templateRootfs(rootfs: RootfsSpec): RootfsSpec {
  const layers = templateLayers(rootfs) ?? [];
  const digest = createHash('sha256').update(layers.map((l) => l.digest).join('\n')).digest('hex');
  return { manifestDigest: `template:sha256:${digest}`, configDigest: rootfs.configDigest, layers, process: rootfs.process };
}

/** The plan a template container is recorded under until a deployment takes it: no service's name or settings. */
export function templatePlan(plan: DeploymentPlan): DeploymentPlan {
  return { service: { name: 'template', version: '0' }, image: plan.image, store: plan.store, resources: plan.resources };
}

/**
 * The mounts that add the service's layer (the last of `lowerDirs`, lowest first, as the
 * layer cache gives them) to a root made of the others; undefined when it cannot be done
 * with the same result as the ordinary path. Reads only the layer cache (host-owned).
 */
export async function graftMounts(lowerDirs: string[]): Promise<GraftLayers['mounts'] | undefined> {
  if (lowerDirs.length < 2) return undefined;
  const serviceDir = lowerDirs[lowerDirs.length - 1]!;
  const templateDirs = lowerDirs.slice(0, -1);
  const entries = await readdir(serviceDir, { withFileTypes: true });
  if (entries.length === 0) return undefined;
  const mounts: GraftLayers['mounts'] = [];
  for (const e of entries) {
    if (!e.isDirectory() || e.name.startsWith('.wh.') || RESERVED.has(e.name)) return undefined;
    for (const d of templateDirs) {
      if (!(await absentOrEmptyDir(join(d, e.name))) || (await exists(join(d, `.wh.${e.name}`)))) return undefined;
    }
    mounts.push({ name: e.name, lowerDirs: [join(serviceDir, e.name)] });
  }
  return mounts.sort((a, b) => a.name.localeCompare(b.name));
}

/** The directory holding every layer dir of the cache. */
export function layersParent(lowerDirs: string[]): string {
  return dirname(lowerDirs[lowerDirs.length - 1]!);
}

async function absentOrEmptyDir(path: string): Promise<boolean> {
  try {
    const st = await lstat(path);
    return st.isDirectory() && (await readdir(path)).length === 0;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return true;
    throw e;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}
