// The OCI runtime spec (config.json) of one instance: what `runc spec` generates, with
// Shoal's edits (no capabilities, no network but lo, limits, seccomp, /run/shoal).
import { readdirSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { ShoalError } from '../../../protocol/index.ts';
import type { IdMapping, InstanceResources, InstanceSpec } from '../driver.ts';
import { LISTEN_ENV } from '../shared/listener.ts';
import { defaultSeccompProfile, type SeccompArchitectures, type SeccompProfile } from './seccomp.ts';

export interface OciMount {
  destination: string;
  type: string;
  source: string;
  options?: string[];
}

/** The subset of the OCI runtime spec (1.0.2) that we fill in. */
export interface OciRuntimeSpec {
  ociVersion: string;
  process: {
    terminal: boolean;
    user: { uid: number; gid: number };
    args: string[];
    env: string[];
    cwd: string;
    capabilities: { bounding: string[]; effective: string[]; inheritable: string[]; permitted: string[]; ambient: string[] };
    rlimits: Array<{ type: string; hard: number; soft: number }>;
    noNewPrivileges: boolean;
  };
  root: { path: string; readonly: boolean };
  hostname: string;
  mounts: OciMount[];
  linux: {
    cgroupsPath: string;
    resources: {
      devices: Array<{ allow: boolean; access: string }>;
      memory: { limit: number; swap: number };
      cpu: { shares: number; quota: number; period: number };
      pids: { limit: number };
    };
    namespaces: Array<{ type: string }>;
    uidMappings?: Array<{ containerID: number; hostID: number; size: number }>;
    gidMappings?: Array<{ containerID: number; hostID: number; size: number }>;
    maskedPaths: string[];
    readonlyPaths: string[];
    seccomp?: SeccompProfile;
  };
}

export interface RuntimeSpecOptions {
  /** `linux.cgroupsPath`; relative paths land under runc's own cgroup in each hierarchy. */
  cgroupsPath: string;
  /** Apply the default seccomp profile (default true). */
  seccomp?: boolean;
  /** ABIs the seccomp filter admits (default 'x86-family'). */
  seccompArchitectures?: SeccompArchitectures;
  /** Size of the instance's /tmp tmpfs (default 64 MiB). */
  tmpSizeBytes?: number;
  /** Size of the instance's /run/shoal tmpfs (default 16 MiB). */
  runSizeBytes?: number;
  /** Run in a user namespace with this mapping (root inside is hostId outside). */
  idMapping?: IdMapping | undefined;
  /** More paths to mask, e.g. hostBlockDeviceDirs() (default none). */
  extraMaskedPaths?: string[];
  /**
   * The $PORT contract (spec.tcpPort): the host path of a copy of shoal-port-bridge,
   * bound read-only at PORT_BRIDGE_INSIDE and run as the container's init in front of
   * spec.args (native/port-bridge/shoal-port-bridge.c).
   */
  portBridge?: string | undefined;
}

/** Where the port bridge appears inside an instance that listens on $PORT. */
export const PORT_BRIDGE_INSIDE = '/.shoal-port-bridge';

/**
 * What containerd masks, plus what names the host's disks: the block device views of
 * sysfs, per-filesystem dirs named after devices (/sys/fs/ext4/vda), /proc/partitions and
 * /proc/diskstats. Directories are covered by an empty read-only tmpfs, files by /dev/null.
 */
export const MASKED_PATHS = [
  '/proc/acpi', '/proc/asound', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list',
  '/proc/timer_stats', '/proc/sched_debug', '/proc/scsi', '/sys/firmware', '/sys/devices/virtual/powercap',
  '/proc/partitions', '/proc/diskstats', '/sys/block', '/sys/class/block', '/sys/dev/block', '/sys/devices/virtual/block',
  '/sys/fs/ext4', '/sys/fs/btrfs', '/sys/fs/xfs', '/sys/kernel/debug',
];

/**
 * The sysfs dirs that hold this host's physical block devices (…/virtio1/block for vda):
 * masked too, since they name the host's disks. Read once per driver.
 */
export function hostBlockDeviceDirs(sysClassBlock = '/sys/class/block'): string[] {
  const out = new Set<string>();
  let names: string[] = [];
  try {
    names = readdirSync(sysClassBlock);
  } catch {
    return [];
  }
  for (const name of names) {
    try {
      const real = realpathSync(join(sysClassBlock, name));
      if (!real.startsWith('/sys/devices/') || real.startsWith('/sys/devices/virtual/')) continue;
      // …/block/vda (or …/block/vda/vda1): mask the …/block dir.
      const i = real.lastIndexOf('/block/');
      if (i > 0) out.add(real.slice(0, i + '/block'.length));
    } catch {
      // gone meanwhile
    }
  }
  return [...out].sort();
}

export const DEFAULT_TMP_BYTES = 64 * 1024 * 1024;
export const DEFAULT_RUN_BYTES = 16 * 1024 * 1024;
/** Where the instance finds its import sockets (a read-only view of a host-owned dir). */
export const IMPORTS_INSIDE = '/run/shoal/imports';
const CPU_PERIOD_US = 100_000;

/** runc's container-id rule (and ours): letters, digits, _ + - . */
const ID_PATTERN = /^[\w+\-.]+$/;

export function validateInstanceId(id: string): void {
  if (!ID_PATTERN.test(id) || id.length > 128) {
    throw new ShoalError('invalid', `instance id ${JSON.stringify(id)} must be 1-128 characters of letters, digits, _ + - .`, { field: 'id' });
  }
}

/**
 * CPU controls for a share of `cpuMillis` millicores: shares weigh instances against
 * each other under contention (1024 = one core's worth), and quota/period caps the
 * instance at that share of CPU time in every 100 ms.
 */
export function cpuControls(cpuMillis: number): { shares: number; quota: number; period: number } {
  return {
    shares: Math.max(2, Math.round((1024 * cpuMillis) / 1000)),
    quota: Math.max(1000, Math.round((cpuMillis * CPU_PERIOD_US) / 1000)),
    period: CPU_PERIOD_US,
  };
}

function validateResources(r: InstanceResources): void {
  const checks: Array<['memoryBytes' | 'cpuMillis' | 'pids', number]> = [
    ['memoryBytes', 4 * 1024 * 1024],
    ['cpuMillis', 1],
    ['pids', 1],
  ];
  for (const [field, min] of checks) {
    const v = r[field];
    if (!Number.isSafeInteger(v) || v < min) {
      throw new ShoalError('invalid', `resources.${field} must be an integer of at least ${min}, got ${v}`, { field: `resources.${field}` });
    }
  }
}

export function buildRuntimeSpec(spec: InstanceSpec, options: RuntimeSpecOptions): OciRuntimeSpec {
  validateInstanceId(spec.id);
  validateResources(spec.resources);
  if (spec.args.length === 0) throw new ShoalError('invalid', 'spec.args is empty: nothing to run', { field: 'args' });
  if (!spec.cwd.startsWith('/')) throw new ShoalError('invalid', `spec.cwd must be absolute inside the root: ${spec.cwd}`, { field: 'cwd' });
  const tmpBytes = options.tmpSizeBytes ?? DEFAULT_TMP_BYTES;
  const runBytes = options.runSizeBytes ?? DEFAULT_RUN_BYTES;
  const memoryLimit = spec.resources.memoryBytes + (spec.resources.diskBytes ?? 0);
  const kib = (n: number): string => `size=${Math.ceil(n / 1024)}k`;
  if (spec.tcpPort !== undefined && options.portBridge === undefined) {
    throw new ShoalError('internal', 'spec.tcpPort needs the port bridge (options.portBridge)', { field: 'tcpPort' });
  }
  const args = spec.tcpPort === undefined ? spec.args : [PORT_BRIDGE_INSIDE, String(spec.tcpPort), ...spec.args];
  const runtime: OciRuntimeSpec = {
    ociVersion: '1.0.2-dev',
    process: {
      terminal: false,
      user: { uid: spec.user.uid, gid: spec.user.gid },
      args,
      // The listener arrives as fd 3 (runc --preserve-fds 1): LISTEN_FDS says so.
      env: [...spec.env.filter((kv) => !/^LISTEN_(FDS|PID|FDNAMES)=/.test(kv)), ...LISTEN_ENV],
      cwd: spec.cwd,
      capabilities: { bounding: [], effective: [], inheritable: [], permitted: [], ambient: [] },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    // Writable on purpose: spec.rootfs is an overlay whose upper dir belongs to this
    // instance alone, so writes land there and the image's layers stay untouched (the
    // instance has a read-only view of everything but its upper layer and /tmp). A
    // writable upper is also what a snapshot commits as a new overlay layer.
    root: { path: spec.rootfs, readonly: false },
    hostname: spec.id.slice(0, 63),
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'] },
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
      { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'] },
      { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777', kib(tmpBytes)] },
      // The instance's own scratch run dir: nothing on the host, bounded. Its listener is
      // inherited (fd 3), so nothing the host connects to lives here.
      { destination: '/run/shoal', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'noexec', 'mode=1777', kib(runBytes)] },
      // Its imports' sockets (SHOAL_IMPORTS): a read-only view of a host-owned directory, so
      // the instance can connect to them but not replace, add or remove any.
      { destination: IMPORTS_INSIDE, type: 'bind', source: spec.importsDir, options: ['rbind', 'ro', 'nosuid', 'nodev', 'noexec'] },
      // The $PORT contract's bridge: a host-owned, read-only copy of one static binary.
      ...(options.portBridge === undefined ? [] : [{ destination: PORT_BRIDGE_INSIDE, type: 'bind', source: options.portBridge, options: ['bind', 'ro', 'nosuid', 'nodev'] }]),
    ],
    linux: {
      cgroupsPath: options.cgroupsPath,
      resources: {
        devices: [{ allow: false, access: 'rwm' }],
        // swap = memory: no swap on top of the limit. The root layer is a tmpfs whose pages
        // are charged here too: its size is added, so filling it ends in ENOSPC, not OOM.
        memory: { limit: memoryLimit, swap: memoryLimit },
        cpu: cpuControls(spec.resources.cpuMillis),
        pids: { limit: spec.resources.pids },
      },
      // A new network namespace holds only lo: the instance cannot reach the host's network.
      namespaces: [{ type: 'pid' }, { type: 'network' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }],
      maskedPaths: [...MASKED_PATHS, ...(options.extraMaskedPaths ?? [])],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
    },
  };
  if (options.idMapping) {
    // Root inside is an unprivileged id outside: whatever the instance writes (a setuid
    // file included) belongs to no privileged host user.
    const { hostId, count } = options.idMapping;
    if (spec.user.uid >= count || spec.user.gid >= count) {
      throw new ShoalError('invalid', `user ${spec.user.uid}:${spec.user.gid} is outside the ${count} ids an instance has`, { field: 'user' });
    }
    runtime.linux.namespaces.unshift({ type: 'user' });
    runtime.linux.uidMappings = [{ containerID: 0, hostID: hostId, size: count }];
    runtime.linux.gidMappings = [{ containerID: 0, hostID: hostId, size: count }];
  }
  if (options.seccomp !== false) {
    runtime.linux.seccomp = defaultSeccompProfile(options.seccompArchitectures ? { architectures: options.seccompArchitectures } : {});
  }
  return runtime;
}
