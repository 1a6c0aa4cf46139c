// QEMU's command line for one instance, the accelerator probe, and the QEMU process's
// own cgroup. The device line must be identical between a start and a restore of its
// saved state (only the disk paths, the forwarded port and -incoming may differ), so
// both are built here from the same function.
import { execFile } from 'node:child_process';
import { access, mkdir, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const QEMU = 'qemu-system-x86_64';
/** Pinned, so a state saved by this QEMU restores on another host with the same version. */
export const MACHINE = 'pc-i440fx-7.2';
/** The guest's exit code arrives through this port (isa-debug-exit: QEMU exits (v << 1) | 1). */
const EXIT_PORT = '0xf4';

export type Accel = 'kvm' | 'tcg';

/** QEMU's inherited descriptor for a saved state (restore) or a migration stream (incoming). */
export const FEED_FD = 5;

/** TCG translation cache (MiB). */
const TCG_TB_MIB = 128;

const KERNEL_CMDLINE = [
  'console=ttyS0',
  'panic=-1',
  'quiet',
  'loglevel=3',
  'mitigations=off',
  'i8042.noaux',
  'i8042.nokbd',
  'i8042.nopnp',
  '8250.nr_uarts=1',
  'cryptomgr.notests',
  'no_timer_check',
  'tsc=reliable',
  'random.trust_cpu=on',
  'pci=lastbus=0',
].join(' ');

export interface QemuLaunch {
  accel: Accel;
  vmlinux: string;
  initrd: string;
  overlay: string;
  specDisk: string;
  /** /dev/vdc: where shoal-run writes how the service ended (status.ts). */
  statusDisk: string;
  hostPort: number;
  guestPort: number;
  memoryMiB: number;
  cpus: number;
  qmpSocket: string;
  /** QEMU writes its pid here (and removes the file when it exits). */
  pidFile: string;
  /** Drop to this user once QEMU has opened its files (-runas), when set. */
  runAs: string | undefined;
  /**
   * -incoming: `defer` (a restore, or a live migration's target: set up over QMP, then
   * migrate-incoming from fd 5, FEED_FD: the saved RAM's file or the relayed stream).
   */
  incoming?: string;
}

export function qemuArgs(l: QemuLaunch): string[] {
  return [
    '-M', MACHINE,
    // TCG's translation cache defaults to 1 GiB; a small guest needs far less (memory per VM).
    '-accel', l.accel === 'tcg' ? `tcg,tb-size=${TCG_TB_MIB}` : l.accel,
    ...(l.accel === 'kvm' ? ['-cpu', 'host'] : []),
    '-m', String(l.memoryMiB),
    '-smp', String(l.cpus),
    '-nodefaults', '-no-user-config', '-display', 'none', '-vga', 'none', '-no-reboot',
    // The serial console is QEMU's stdout: the guest's kernel messages and the service's output.
    '-serial', 'stdio',
    '-kernel', l.vmlinux,
    '-initrd', l.initrd,
    '-append', KERNEL_CMDLINE,
    // auto-read-only=off: QEMU keeps its descriptors across a capture instead of re-opening
    // the files by path after -runas dropped it to a user that may not reach them.
    '-drive', `file=${l.overlay},if=virtio,format=qcow2,cache=writeback,auto-read-only=off`,
    '-drive', `file=${l.specDisk},if=virtio,format=raw,readonly=on,auto-read-only=off`,
    '-drive', `file=${l.statusDisk},if=virtio,format=raw,auto-read-only=off`,
    // User networking restricted: the guest reaches nothing; only the forwarded port reaches it.
    '-netdev', `user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:${l.hostPort}-:${l.guestPort}`,
    '-device', 'virtio-net-pci,netdev=n0,romfile=',
    '-device', `isa-debug-exit,iobase=${EXIT_PORT},iosize=0x04`,
    '-qmp', `unix:${l.qmpSocket},server=on,wait=off`,
    '-pidfile', l.pidFile,
    // seccomp: no obsolete calls, no spawning, no resource control; -runas needs setuid,
    // so elevateprivileges stays allowed (after the drop there is nothing to elevate to).
    '-sandbox', 'on,obsolete=deny,spawn=deny,resourcecontrol=deny',
    ...(l.runAs ? ['-runas', l.runAs] : []),
    ...(l.incoming !== undefined ? ['-incoming', l.incoming] : []),
  ];
}

/** The guest's exit as QEMU's exit status tells it (isa-debug-exit), or undefined. */
export function guestExitCode(status: number | null): number | undefined {
  if (status === null || status % 2 === 0) return undefined;
  return status >> 1;
}

/**
 * KVM only when a guest actually boots with it (a /dev/kvm that opens is not enough):
 * the kernel template's initrd is started with rdinit=/shoal-run and no spec disk, so
 * shoal-run reports 126 through the exit port at once.
 */
export async function probeAccel(vmlinux: string, initrd: string): Promise<{ accel: Accel; detail: string }> {
  try {
    await access('/dev/kvm');
  } catch {
    return { accel: 'tcg', detail: 'no /dev/kvm' };
  }
  try {
    await run(QEMU, ['-M', MACHINE, '-accel', 'kvm', '-m', '128', '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot', '-kernel', vmlinux, '-initrd', initrd, '-append', `${KERNEL_CMDLINE} rdinit=/shoal-run`, '-device', `isa-debug-exit,iobase=${EXIT_PORT},iosize=0x04`], { timeout: 20_000 });
    return { accel: 'tcg', detail: 'a KVM guest exited without its report' };
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (code === ((126 << 1) | 1)) return { accel: 'kvm', detail: 'a KVM guest booted' };
    return { accel: 'tcg', detail: `KVM present but a guest did not boot (${(e as Error).message.split('\n')[0]})` };
  }
}

/** The QEMU process's own cgroup (v1 memory+cpu, or v2), made before QEMU starts. */
export interface QemuCgroup {
  /** Files to write QEMU's pid into (its wrapper shell writes $$ before exec). */
  procs: string[];
  remove(): Promise<void>;
}

const CGROUP_ROOT = '/sys/fs/cgroup';

export async function createQemuCgroup(id: string, memoryBytes: number, cpuMillis: number): Promise<QemuCgroup | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const name = join('shoal', `vm-${id}`);
  const period = 100_000;
  const quota = Math.max(1000, Math.round((cpuMillis / 1000) * period));
  const dirs: string[] = [];
  const remove = async (): Promise<void> => {
    for (const d of dirs.reverse()) await rmdir(d).catch(() => undefined); // busy only while QEMU lives
  };
  try {
    if (await exists(join(CGROUP_ROOT, 'memory', 'memory.limit_in_bytes'))) {
      const mem = join(CGROUP_ROOT, 'memory', name);
      const cpu = join(CGROUP_ROOT, 'cpu', name);
      await mkdir(mem, { recursive: true });
      dirs.push(mem);
      await writeFile(join(mem, 'memory.limit_in_bytes'), String(memoryBytes));
      await mkdir(cpu, { recursive: true });
      dirs.push(cpu);
      await writeFile(join(cpu, 'cpu.cfs_period_us'), String(period));
      await writeFile(join(cpu, 'cpu.cfs_quota_us'), String(quota));
      return { procs: [join(mem, 'cgroup.procs'), join(cpu, 'cgroup.procs')], remove };
    }
    if (await exists(join(CGROUP_ROOT, 'cgroup.controllers'))) {
      await writeFile(join(CGROUP_ROOT, 'cgroup.subtree_control'), '+memory +cpu').catch(() => undefined);
      await mkdir(join(CGROUP_ROOT, 'shoal'), { recursive: true });
      await writeFile(join(CGROUP_ROOT, 'shoal', 'cgroup.subtree_control'), '+memory +cpu').catch(() => undefined);
      const dir = join(CGROUP_ROOT, name);
      await mkdir(dir, { recursive: true });
      dirs.push(dir);
      await writeFile(join(dir, 'memory.max'), String(memoryBytes));
      await writeFile(join(dir, 'cpu.max'), `${quota} ${period}`);
      return { procs: [join(dir, 'cgroup.procs')], remove };
    }
  } catch (e) {
    await remove();
    throw e;
  }
  return undefined;
}

async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}
