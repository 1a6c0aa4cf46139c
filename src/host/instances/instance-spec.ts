// What a driver is given to start one instance: the environment, the user it runs as,
// the resources; built from the image's config and the plan. No I/O but reading the
// image's /etc/passwd and /etc/group.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { InstanceSpec } from '../drivers/driver.ts';
import type { InstancePaths } from '../host-state.ts';
import type { DeploymentPlan, RootfsSpec } from '../../protocol/index.ts';
import { ShoalError } from '../../protocol/index.ts';

/** Where the instance's socket directory appears inside its root. */
export const SOCKET_DIR_INSIDE = '/run/shoal';

export const NOBODY = { uid: 65534, gid: 65534 };

const DEFAULT_DISK_MB = 64;
/** The bound on an instance's writable root layer: the plan's diskMb, else 64 MiB. */
export const diskBytes = (plan: DeploymentPlan): number => (plan.resources.diskMb ?? DEFAULT_DISK_MB) * 1024 * 1024;

export interface SpecInput {
  id: string;
  plan: DeploymentPlan;
  rootfs: RootfsSpec;
  rootPath: string;
  paths: Pick<InstancePaths, 'socketDir' | 'socketPath' | 'importsDir' | 'logFile' | 'stateDir'>;
  user: { uid: number; gid: number };
  /** Without a mount namespace the service sees host paths, so it is told those. */
  hostPaths: boolean;
  /** The driver bounds the root's writable layer (resources.diskBytes). */
  boundedRoot?: boolean;
}

export function buildSpec(input: SpecInput): InstanceSpec {
  const { id, plan, rootfs, paths } = input;
  const spec: InstanceSpec = {
    id,
    rootfs: input.rootPath,
    rootLayers: rootfs.layers.map((l) => l.diffId),
    args: plan.args ?? rootfs.process.args,
    env: buildEnv(rootfs.process.env, plan, id, input.hostPaths ? paths.socketDir : SOCKET_DIR_INSIDE),
    cwd: rootfs.process.cwd || '/',
    user: input.user,
    resources: {
      memoryBytes: plan.resources.memoryMb * 1024 * 1024,
      cpuMillis: plan.resources.cpuMillis,
      pids: plan.resources.pids,
      ...(input.boundedRoot ? { diskBytes: diskBytes(plan) } : {}),
    },
    listenSocket: paths.socketPath,
    ...(plan.listen === undefined ? {} : { tcpPort: plan.listen.port }),
    importsDir: paths.importsDir,
    logFile: paths.logFile,
    stateDir: paths.stateDir,
  };
  // A component image is a bundle for one driver (its label); no other driver can run it.
  if (rootfs.driver !== undefined && rootfs.driver !== plan.driver) {
    throw new ShoalError('invalid', `image ${plan.image} is a ${rootfs.driver} component: only the ${rootfs.driver} driver runs it, and this plan asks for ${plan.driver ?? "the host's default driver"}`, { field: 'driver' });
  }
  if (spec.args.length === 0) throw new ShoalError('invalid', `image ${plan.image} names no program to run, and the plan gives no args`, { field: 'args' });
  return spec;
}

/** The instance's environment: the image's, then the plan's, then Shoal's own (which win). */
export function buildEnv(imageEnv: string[], plan: DeploymentPlan, id: string, socketDir: string): string[] {
  const env = new Map<string, string>();
  for (const kv of imageEnv) {
    const eq = kv.indexOf('=');
    if (eq > 0) env.set(kv.slice(0, eq), kv.slice(eq + 1));
  }
  if (!env.has('PATH')) env.set('PATH', '/usr/local/bin:/usr/bin:/bin');
  for (const [k, v] of Object.entries(plan.env ?? {})) env.set(k, v);
  env.set('SHOAL_LISTEN', `${socketDir}/app.sock`);
  env.set('SHOAL_IMPORTS', `${socketDir}/imports`);
  env.set('SHOAL_SERVICE', plan.service.name);
  env.set('SHOAL_VERSION', plan.service.version);
  env.set('SHOAL_INSTANCE', id);
  // The $PORT contract; the process driver replaces it with a free port of the host's.
  if (plan.listen !== undefined) env.set('PORT', String(plan.listen.port));
  return [...env].map(([k, v]) => `${k}=${v}`);
}

/** The image config's User ("uid", "uid:gid", "name", "name:group"); nobody when unset. */
export async function resolveUser(root: string, user: string | undefined): Promise<{ uid: number; gid: number }> {
  if (!user) return NOBODY;
  const [u, g] = user.split(':', 2) as [string, string | undefined];
  let uid: number;
  let gid: number | undefined;
  if (/^\d+$/.test(u)) {
    uid = Number(u);
  } else {
    const row = (await readDb(root, 'etc/passwd')).find((r) => r[0] === u);
    if (!row) throw new ShoalError('invalid', `image user ${JSON.stringify(u)} is not in the image's /etc/passwd`, { field: 'image' });
    uid = Number(row[2]);
    gid = Number(row[3]);
  }
  if (g !== undefined) {
    if (/^\d+$/.test(g)) gid = Number(g);
    else {
      const row = (await readDb(root, 'etc/group')).find((r) => r[0] === g);
      if (!row) throw new ShoalError('invalid', `image group ${JSON.stringify(g)} is not in the image's /etc/group`, { field: 'image' });
      gid = Number(row[2]);
    }
  }
  if (gid === undefined) {
    const row = (await readDb(root, 'etc/passwd')).find((r) => Number(r[2]) === uid);
    gid = row ? Number(row[3]) : uid;
  }
  return { uid, gid };
}

/** An image without the file has no such names; any other read failure is passed on. */
async function readDb(root: string, file: string): Promise<string[][]> {
  let text: string;
  try {
    text = await readFile(join(root, file), 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return [];
    throw new ShoalError('invalid', `reading the image's /${file} failed: ${(e as Error).message}`, { field: 'image', cause: e });
  }
  return text.split('\n').map((line) => line.split(':'));
}
