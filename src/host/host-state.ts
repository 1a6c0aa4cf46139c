// The host's own small state on disk: one directory per instance holding its record
// (instance.json, written atomically), its writable layer, its socket directory and
// its log. A restarted host reads these back to re-adopt or clean up.
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DeploymentPlan, DeploymentTimeline, InstanceState, RootfsSpec } from '../protocol/index.ts';
import type { DriverName } from './drivers/index.ts';
import type { Logger } from './ports.ts';

export interface InstancePaths {
  dir: string;
  record: string;
  /** Overlay upper and work directories (runc) — the instance's only writable layer. */
  upper: string;
  work: string;
  /** Where the root file system is mounted (runc) or the flattened tree's path (process). */
  rootfs: string;
  /**
   * Host-owned (never writable by the instance): app.sock, the instance's listening socket
   * (its descriptor is passed in), and imports/ (mounted read-only inside). Kept short
   * (socket paths: 108 bytes).
   */
  socketDir: string;
  importsDir: string;
  socketPath: string;
  logFile: string;
  /** The driver's scratch space. */
  stateDir: string;
}

export interface InstanceExitRecord {
  reason: string;
  code?: number;
  signal?: string;
  at: number;
}

export interface InstanceRecord {
  id: string;
  plan: DeploymentPlan;
  driver: DriverName;
  state: InstanceState;
  createdAt: number;
  updatedAt: number;
  rootfs: RootfsSpec | undefined;
  /** The root the driver was given (a mount for runc, the flat tree for process). */
  rootPath: string | undefined;
  /** Whether an overlay is mounted at paths.rootfs (cleanup must unmount it). */
  mounted: boolean;
  timeline: DeploymentTimeline | undefined;
  exit: InstanceExitRecord | undefined;
}

const ID_RE = /^[a-z0-9][a-z0-9-]{0,40}$/;

export function newInstanceId(serviceName: string): string {
  return `${serviceName.slice(0, 20).replace(/-+$/, '')}-${randomBytes(4).toString('hex')}`;
}

export function isInstanceId(id: string): boolean {
  return ID_RE.test(id);
}

export interface HostState {
  readonly dataDir: string;
  readonly instancesDir: string;
  paths(id: string): InstancePaths;
  /** Creates the instance's directory tree (not its record). */
  create(id: string): Promise<InstancePaths>;
  write(record: InstanceRecord): Promise<void>;
  read(id: string): Promise<InstanceRecord | undefined>;
  /** Every record on disk, plus the ids of instance dirs whose record is missing or unreadable. */
  list(): Promise<{ records: InstanceRecord[]; orphans: string[] }>;
  /** Removes the instance's whole directory (must be unmounted first). */
  remove(id: string): Promise<void>;
}

export function createHostState(dataDir: string, options: { log?: Pick<Logger, 'warn'> } = {}): HostState {
  const instancesDir = join(dataDir, 'instances');
  const log = options.log;
  const paths = (id: string): InstancePaths => {
    if (!isInstanceId(id)) throw new Error(`bad instance id ${JSON.stringify(id)}`);
    const dir = join(instancesDir, id);
    const socketDir = join(dir, 'sock');
    return {
      dir,
      record: join(dir, 'instance.json'),
      upper: join(dir, 'upper'),
      work: join(dir, 'work'),
      rootfs: join(dir, 'root'),
      socketDir,
      importsDir: join(socketDir, 'imports'),
      socketPath: join(socketDir, 'app.sock'),
      logFile: join(dir, 'log'),
      stateDir: join(dir, 'driver'),
    };
  };

  /** The record, or undefined when there is none; an unreadable one is logged. */
  const readRecord = async (id: string): Promise<InstanceRecord | undefined> => {
    const file = paths(id).record;
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      log?.warn({ instance: id, file, err: String(e) }, 'cannot read an instance record');
      return undefined;
    }
    try {
      return JSON.parse(text) as InstanceRecord;
    } catch (e) {
      log?.warn({ instance: id, file, err: String(e) }, 'an instance record is not JSON');
      return undefined;
    }
  };

  return {
    dataDir,
    instancesDir,
    paths,
    async create(id) {
      const p = paths(id);
      await mkdir(instancesDir, { recursive: true });
      await mkdir(p.dir); // fails if the id is taken
      for (const d of [p.upper, p.work, p.rootfs, p.socketDir, p.importsDir, p.stateDir]) await mkdir(d, { recursive: true, mode: 0o755 });
      return p;
    },
    async write(record) {
      const p = paths(record.id);
      const tmp = `${p.record}.${randomBytes(4).toString('hex')}.tmp`;
      // No fsync: the rename keeps the record whole across a crash of the host process,
      // and after a power loss the mounts and containers it describes are gone anyway.
      await writeFile(tmp, JSON.stringify(record, null, 2), { mode: 0o600 });
      try {
        await rename(tmp, p.record);
      } catch (e) {
        await unlink(tmp).catch((e2: NodeJS.ErrnoException) => {
          if (e2.code !== 'ENOENT') log?.warn({ instance: record.id, file: tmp, err: String(e2) }, 'removing a temporary record failed');
        });
        throw e;
      }
    },
    read: readRecord,
    async list() {
      let names: string[];
      try {
        names = await readdir(instancesDir);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { records: [], orphans: [] };
        throw e;
      }
      const records: InstanceRecord[] = [];
      const orphans: string[] = [];
      for (const name of names.sort()) {
        if (!isInstanceId(name)) continue;
        const record = await readRecord(name);
        if (record && record.id === name) records.push(record);
        else orphans.push(name);
      }
      return { records, orphans };
    },
    async remove(id) {
      await rm(paths(id).dir, { recursive: true, force: true, maxRetries: 3 });
    },
  };
}
