// Finds an instance's cgroup directories (from its init's /proc/<pid>/cgroup and our
// mount table) and reads usage and OOM counters from them. Works on cgroup v1, v2 and
// the hybrid layout (v1 controllers plus an empty unified tree) this machine has.
import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';

export type CgroupMode = 'v1' | 'hybrid' | 'v2';

export interface CgroupPaths {
  /** v1: controller name → absolute directory. */
  v1: Record<string, string>;
  /** The v2 (unified) directory, when the unified hierarchy is mounted. */
  unified: string | undefined;
}

interface CgroupMount {
  version: 1 | 2;
  /** v1 controllers of the hierarchy (empty for v2). */
  controllers: string[];
  /** Cgroup path that the mount's root shows (mountinfo field 4). */
  root: string;
  mountPoint: string;
}

async function cgroupMounts(): Promise<CgroupMount[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const out: CgroupMount[] = [];
  for (const line of text.split('\n')) {
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const f = left.split(' ');
    const [fstype, , superOpts] = right.split(' ');
    if (fstype !== 'cgroup' && fstype !== 'cgroup2') continue;
    out.push({
      version: fstype === 'cgroup2' ? 2 : 1,
      controllers: fstype === 'cgroup' ? (superOpts ?? '').split(',').filter((o) => o !== 'rw' && o !== 'ro') : [],
      root: f[3] ?? '/',
      mountPoint: f[4] ?? '',
    });
  }
  return out;
}

export async function cgroupMode(): Promise<CgroupMode | 'none'> {
  const mounts = await cgroupMounts();
  const v1 = mounts.some((m) => m.version === 1 && m.controllers.includes('memory'));
  const v2 = mounts.some((m) => m.version === 2);
  return v1 && v2 ? 'hybrid' : v1 ? 'v1' : v2 ? 'v2' : 'none';
}

function under(mount: CgroupMount, path: string): string {
  const rel = mount.root !== '/' && path.startsWith(mount.root) ? path.slice(mount.root.length) : path;
  return join(mount.mountPoint, rel);
}

/** The cgroup directories of a live process. */
export async function cgroupPathsOf(pid: number): Promise<CgroupPaths> {
  const [text, mounts] = await Promise.all([readFile(`/proc/${pid}/cgroup`, 'utf8'), cgroupMounts()]);
  const paths: CgroupPaths = { v1: {}, unified: undefined };
  for (const line of text.split('\n')) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    const [, , list, path] = m as unknown as [string, string, string, string];
    if (list === '') {
      const mount = mounts.find((x) => x.version === 2);
      if (mount) paths.unified = under(mount, path);
      continue;
    }
    for (const controller of list.split(',')) {
      const mount = mounts.find((x) => x.version === 1 && x.controllers.includes(controller));
      if (mount) paths.v1[controller] = under(mount, path);
    }
  }
  return paths;
}

async function readNumber(file: string): Promise<number | undefined> {
  try {
    const n = Number((await readFile(file, 'utf8')).trim());
    return Number.isFinite(n) ? n : undefined;
  } catch {
    return undefined;
  }
}

async function readKey(file: string, key: string): Promise<number | undefined> {
  try {
    const m = new RegExp(`^${key} (\\d+)$`, 'm').exec(await readFile(file, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

export interface CgroupStats {
  memoryBytes: number | undefined;
  cpuUsageNanos: number | undefined;
  pids: number | undefined;
}

export async function readCgroupStats(paths: CgroupPaths): Promise<CgroupStats> {
  const { v1, unified } = paths;
  const memory = v1.memory
    ? readNumber(join(v1.memory, 'memory.usage_in_bytes'))
    : unified ? readNumber(join(unified, 'memory.current')) : undefined;
  const cpu = v1.cpuacct
    ? readNumber(join(v1.cpuacct, 'cpuacct.usage'))
    : unified ? readKey(join(unified, 'cpu.stat'), 'usage_usec').then((us) => (us === undefined ? undefined : us * 1000)) : undefined;
  const pids = v1.pids ? readNumber(join(v1.pids, 'pids.current')) : unified ? readNumber(join(unified, 'pids.current')) : undefined;
  const [memoryBytes, cpuUsageNanos, pidCount] = await Promise.all([memory, cpu, pids]);
  return { memoryBytes, cpuUsageNanos, pids: pidCount };
}

/** How many processes the OOM killer took in the instance's memory cgroup. */
export async function readOomKills(paths: CgroupPaths): Promise<number | undefined> {
  if (paths.v1.memory) return readKey(join(paths.v1.memory, 'memory.oom_control'), 'oom_kill');
  if (paths.unified) return readKey(join(paths.unified, 'memory.events'), 'oom_kill');
  return undefined;
}

/** True while any of the instance's cgroup directories still exists. */
export async function cgroupExists(paths: CgroupPaths): Promise<boolean> {
  for (const dir of [...Object.values(paths.v1), ...(paths.unified ? [paths.unified] : [])]) {
    try {
      await access(dir);
      return true;
    } catch {
      // gone
    }
  }
  return false;
}
