// The `vm` driver: each instance is a QEMU virtual machine booted from the kernel
// template (PVH, uncompressed; kernel.ts in src/image/templates) with the image's layers
// as its root disk: a qcow2 template per layer stack, shared read-only, and a qcow2
// overlay per instance (disks.ts). The guest's shoal-run listens on TCP and hands the
// service fd 3 (LISTEN_FDS=1), QEMU's restricted user network forwards a loopback port
// to it, and shoal-port-bridge (native/) relays the instance socket to that port. QEMU
// and its bridge run under shoal-shim, so a VM outlives an agent restart and is re-attached.
// Control goes through QMP: pause/resume (stop/cont); capture = stop, migrate the RAM to
// a loopback stream the host compresses with zstd, copy the overlay, cont; restore =
// start QEMU with -incoming defer on the saved overlay, load the saved RAM once unpacked
// (migrate-incoming fd:5), then cont.
// Here: the driver (start, restore, receive, recover, destroy). instance.ts is one running
// VM, saved-state.ts the saved state's file, state-dir.ts the files kept per instance.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chown, mkdir, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { type Duplex, type Readable } from 'node:stream';
import { promisify } from 'node:util';
import { ShoalError } from '../../../protocol/index.ts';
import { assembleKernel, readKernelFiles, type KernelFiles } from '../../../image/index.ts';
import type {
  CapturedState,
  Driver,
  DriverCapabilities,
  DriverFingerprint,
  InstanceSpec,
  IncomingMigration,
  LiveReceivingDriver,
  RecoveredInstance,
  RestoringDriver,
} from '../driver.ts';
import { DEFAULT_LOG_MAX_BYTES } from '../shared/capped-log.ts';
import { ensurePortBridge, ensureShim } from '../shared/native.ts';
import { lineReader, readPidFile } from '../shared/shim-reports.ts';
import { createInheritedListener, removeStaleSocket } from '../shared/listener.ts';
import { delay, isAlive, readProcStat, sendSignal, within } from '../shared/proc.ts';
import { freeLoopbackPort } from '../shared/port-bridge.ts';
import { waitHttpAnswer } from './guest-port.ts';
import { createOverlay, ensureRootTemplate, GUEST_PORT, layerStackKey, rebaseOverlay, writeSpecDisk, type RootTemplate } from './disks.ts';
import { VmInstance } from './instance.ts';
import { endIncoming, INCOMING_CONNECT_MS, listenIncoming, makeKeyDir, MAX_BANDWIDTH, openRelay, relay, removeKey, waitIncoming, writeKey } from './live.ts';
import { createQemuCgroup, FEED_FD, MACHINE, probeAccel, QEMU, qemuArgs, type Accel, type QemuCgroup } from './qemu.ts';
import { connectQmp, type Qmp } from './qmp.ts';
import { DISK_ENTRY, MEMORY_ENTRY, STATE_STREAM_SLACK_BYTES, unpackState, VM_STATE_FORMAT, VM_STATE_MEDIA_TYPE } from './saved-state.ts';
import { KEY_DIR, KEYS, MEMORY, OVERLAY, QMP_SOCKET, readState, shimFiles, SPEC_DISK, STATE_FILE, STATUS_DISK, type StateFile, type VmFacts } from './state-dir.ts';
import { createStatusDisk } from './status.ts';

const run = promisify(execFile);

export { unpackState, VM_STATE_MEDIA_TYPE } from './saved-state.ts';

export const capabilities = {
  isolation: 'vm',
  canPause: true,
  /** capture() / restore(): the RAM and the disk overlay, to a host-owned file. */
  canSnapshot: true,
  /** Host → host: live (pre-copy, receive() / migrateTo(), live.ts), or a saved state restored elsewhere. */
  canMigrate: true,
  /**
   * Off unless asked for (liveMigration / SHOAL_VM_LIVE_MIGRATION=1): the live path still
   * has open failure cases (docs/vm-driver.md, "Open"); moves are stop-and-copy meanwhile.
   */
  liveMigrates: false,
  canClone: false,
  enforcesLimits: true,
} as const satisfies DriverCapabilities;

export interface VmDriverOptions {
  /** The driver's own directory: kernel cache (kernel/<release>) and root templates (roots/<key>). */
  dataDir: string;
  /** A kernel directory already built (vmlinux, initrd.img, kernel.json); default: built into dataDir. */
  kernelDir?: string;
  /** The user QEMU drops to once its files are open (-runas); default nobody when root, none otherwise. */
  runAs?: string | false;
  /** Guest RAM floor in MiB (the guest kernel and init need some), default 128. */
  minMemoryMiB?: number;
  log?: (message: string) => void;
  /**
   * The address a live migration's target listens on for the source's stream (one
   * connection, TLS-PSK); default 127.0.0.1, which serves hosts on one machine only.
   */
  migrationHost?: string;
  /**
   * Live migration, source: hold new messages only once the RAM left is estimated to go
   * within this many ms (the stop phase), instead of for the whole pre-copy (the default).
   * For investigation only: see live.ts — under load it corrupted the target guest here.
   */
  migrationHoldLeadMs?: number;
  /**
   * Declare liveMigrates, so the provider moves this host's VMs live (pre-copy) instead of
   * stop-and-copy. Default: SHOAL_VM_LIVE_MIGRATION=1. Off by default because a review found
   * failure paths that can lose a VM or run two (docs/vm-driver.md, "Open"), and the
   * listener offers only 127.0.0.1 (hosts on one machine).
   */
  liveMigration?: boolean;
  /** Where shoal-shim (QEMU's monitor) is compiled and cached; default as the runc driver's. */
  shimDir?: string;
}

/** The serial console's cap: the shim's logger rotates the instance log at this size. */
const LOG_MAX_BYTES = DEFAULT_LOG_MAX_BYTES;
/** How long start() waits for the guest's first HTTP answer (TCG on a loaded machine is slow). */
const BOOT_TIMEOUT_MS = 600_000;
/**
 * QEMU's own memory beyond the guest's RAM: TCG's code cache (128 MiB), device state, and
 * the page cache its disk and kernel reads are charged with (with 256 MiB the cgroup
 * OOM-killed QEMU at ~180 MB RSS during boots and captures on a loaded machine).
 */
const QEMU_OVERHEAD_BYTES = 640 * 1024 * 1024;
/** Beyond the template and spec.resources.diskBytes: the guest's ext4 headroom (disks.ts, 128 MiB) and qcow2 metadata. */
const STATE_DISK_SLACK_BYTES = 512 * 1024 * 1024;

/**
 * restore: QEMU starts (-incoming defer) once the saved overlay is unpacked, with `memory`
 * as its fd 5, and is told to load it once `unpacked` resolves: QEMU's start overlaps the
 * RAM's decompression.
 */
type LaunchMode = { kind: 'start' } | { kind: 'restore'; memory: string; unpacked: Promise<void> } | { kind: 'incoming' };

/** The accelerator a guest of each kernel booted with, probed once per process (ensureAccel). */
const accelProbes = new Map<string, Promise<{ accel: Accel; detail: string }>>();

export function createVmDriver(options: VmDriverOptions) {
  const log = options.log ?? ((m: string) => console.warn(m));
  const vmDir = options.dataDir;
  const rootsDir = join(vmDir, 'roots');
  const runAs = options.runAs === false ? undefined : (options.runAs ?? (process.getuid?.() === 0 ? 'nobody' : undefined));
  const minMemoryMiB = options.minMemoryMiB ?? 128;
  const migrationHost = options.migrationHost ?? '127.0.0.1';
  const live = new Map<string, VmInstance>();
  const native = options.shimDir === undefined ? {} : { cacheDir: options.shimDir };
  let kernel: Promise<KernelFiles> | undefined;
  let closed = false;

  function ensureKernel(): Promise<KernelFiles> {
    kernel ??= (async () => {
      if (options.kernelDir) {
        const k = await readKernelFiles(options.kernelDir);
        if (!k) throw new ShoalError('unavailable', `no kernel template in ${options.kernelDir} (shoal template kernel)`);
        return k;
      }
      const kernels = join(vmDir, 'kernel');
      const have = (await readdir(kernels).catch(() => [] as string[])).filter((n) => !n.includes('.building-')).sort();
      const newest = have.at(-1);
      const found = newest === undefined ? undefined : await readKernelFiles(join(kernels, newest));
      if (found) return found;
      log('vm: building the kernel template from the Debian kernel apt reaches (once per host)');
      await mkdir(kernels, { recursive: true });
      const { currentKernelRelease } = await import('../../../image/index.ts');
      const release = await currentKernelRelease();
      return assembleKernel(join(kernels, release), { release });
    })();
    kernel.catch(() => {
      kernel = undefined;
    });
    return kernel;
  }

  function ensureAccel(k: KernelFiles): Promise<{ accel: Accel; detail: string }> {
    // Once per process and kernel: where /dev/kvm opens but no guest runs, the probe waits
    // out its whole timeout (20 s), which every new driver would pay again.
    let probe = accelProbes.get(k.vmlinux);
    if (!probe) {
      probe = probeAccel(k.vmlinux, k.initrd);
      accelProbes.set(k.vmlinux, probe);
    }
    return probe;
  }


  async function fingerprint(): Promise<DriverFingerprint> {
    let version: string;
    try {
      version = (await run(QEMU, ['--version'])).stdout.split('\n')[0] ?? '';
    } catch (e) {
      return { healthy: false, detail: `${QEMU} is not installed (scripts/setup-system.sh): ${(e as Error).message}`, attributes: { isolation: 'vm' } };
    }
    try {
      const k = await ensureKernel();
      const a = await ensureAccel(k);
      return {
        healthy: true,
        detail: `QEMU ${a.accel === 'kvm' ? 'with KVM' : 'with TCG (no KVM: slow boots)'}; ${a.detail}`,
        attributes: { isolation: 'vm', accel: a.accel, qemu: version, kernel: k.release, machine: MACHINE },
      };
    } catch (e) {
      return { healthy: false, detail: `no kernel template: ${(e as Error).message}`, attributes: { isolation: 'vm', qemu: version } };
    }
  }

  async function rootTemplateFor(spec: InstanceSpec): Promise<RootTemplate> {
    // The agent names the layer stack; without it (a bare rootfs), the tree's path is the key.
    const key = layerStackKey(spec.rootLayers ?? [`rootfs:${spec.rootfs}`]);
    return ensureRootTemplate(rootsDir, key, spec.rootfs, spec.resources.diskBytes ?? 0);
  }

  function machineShape(spec: InstanceSpec): { memoryMiB: number; cpus: number } {
    return { memoryMiB: Math.max(minMemoryMiB, Math.floor(spec.resources.memoryBytes / (1024 * 1024))), cpus: Math.max(1, Math.ceil(spec.resources.cpuMillis / 1000)) };
  }

  /** QEMU started for `spec` (a fresh boot, a restore, or a live migration's target), with QMP connected. */
  async function spawnVm(spec: InstanceSpec, mode: LaunchMode): Promise<{ inst: VmInstance; hostPort: number; feed: Duplex | undefined }> {
    if (closed) throw new ShoalError('unavailable', 'the vm driver is closed');
    if (live.has(spec.id)) throw new ShoalError('conflict', `instance ${spec.id} is already running`, { field: 'id' });
    if (spec.args.length === 0) throw new ShoalError('invalid', 'spec.args is empty: nothing to run', { field: 'args' });
    await mkdir(spec.stateDir, { recursive: true });
    const k = await ensureKernel();
    const { accel: a } = await ensureAccel(k);
    const template = await rootTemplateFor(spec);
    const overlay = join(spec.stateDir, OVERLAY);
    if (mode.kind === 'restore') await rebaseOverlay(template.path, overlay);
    else await createOverlay(template.path, overlay);
    // QEMU re-opens the overlay after a capture (cont re-activates the disks), as runAs.
    const owner = runAs ? await userIds(runAs) : undefined;
    if (owner) await chown(overlay, owner.uid, owner.gid);
    await writeSpecDisk(spec, join(spec.stateDir, SPEC_DISK));
    await createStatusDisk(join(spec.stateDir, STATUS_DISK), owner);
    // A live migration's key goes here (live.ts); QEMU gets the directory as fd 4.
    await makeKeyDir(join(spec.stateDir, KEY_DIR), owner);
    // From spec.resources only (a restore checks the state's annotations agree, never uses them).
    const { memoryMiB, cpus } = machineShape(spec);
    const qmpSocket = join(spec.stateDir, QMP_SOCKET);
    await removeStaleSocket(qmpSocket);
    const cgroup = await createQemuCgroup(spec.id, memoryMiB * 1024 * 1024 + QEMU_OVERHEAD_BYTES, spec.resources.cpuMillis);
    const hostPort = await freeLoopbackPort();
    const files = shimFiles(spec.stateDir);
    for (const f of Object.values(files)) await rm(f, { force: true });
    const args = qemuArgs({
      accel: a,
      vmlinux: k.vmlinux,
      initrd: k.initrd,
      overlay,
      specDisk: join(spec.stateDir, SPEC_DISK),
      statusDisk: join(spec.stateDir, STATUS_DISK),
      hostPort,
      guestPort: GUEST_PORT,
      memoryMiB,
      cpus,
      qmpSocket,
      runAs,
      pidFile: files.qemuPid,
      ...(mode.kind === 'start' ? {} : { incoming: 'defer' }),
    });
    const [shim, portBridge] = await Promise.all([ensureShim(native), ensurePortBridge(native)]);
    let child: ChildProcess;
    const opened: Array<{ close(): Promise<void> }> = [];
    try {
      // The instance socket, host-made as for every driver; shoal-port-bridge (native/)
      // relays its connections to the port QEMU forwards into the guest, and outlives
      // this agent with QEMU, so a VM keeps serving across an agent restart.
      const listener = await createInheritedListener(spec.listenSocket);
      opened.push({ close: listener.release });
      const keyDir = await open(join(spec.stateDir, KEY_DIR), 'r');
      opened.push(keyDir);
      // fd 5 in QEMU: nothing (a boot), the saved RAM's stream as a file (a restore), or a
      // socket pair the live migration's stream is relayed into (receive).
      const feedFile = mode.kind === 'start' ? await open('/dev/null', 'r') : mode.kind === 'restore' ? await open(mode.memory, 'r') : undefined;
      if (feedFile) opened.push(feedFile);
      const shimOut = await open(spec.logFile, 'a');
      opened.push(shimOut);
      // shoal-shim (native/shim), QEMU's monitor, outlives this agent too: it reaps the
      // bridge (which exits with QEMU's status) and writes that status to files.exit, and
      // its logger caps the serial console (the guest kernel's messages and the service's
      // output) into spec.logFile. The shell puts itself in the VM's cgroup, starts the
      // bridge in the background (reparented to the shim, its subreaper) and exits; the
      // shim reads the bridge's pid from files.pid. Descriptors as the shim hands them on:
      // 3 the listener (the bridge's; QEMU does not get it), 4 the key directory
      // (live.ts KEY_FD), 5 the saved state or migration stream (FEED_FD), else /dev/null.
      child = spawn(
        shim,
        ['--listen-fd', '4', '--pass-fd', '5', '--pass-fd', '6', '--log', spec.logFile, String(LOG_MAX_BYTES), files.exit, files.pid,
          '/bin/sh', '-c', 'for f in $SHOAL_CGROUP_PROCS; do echo $$ > "$f" || exit 125; done; "$@" & echo $! > "$SHOAL_PID_FILE"', 'sh', portBridge, String(hostPort), QEMU, ...args],
        {
          env: { PATH: '/usr/bin:/bin', SHOAL_CGROUP_PROCS: cgroup?.procs.join(' ') ?? '', SHOAL_PID_FILE: files.pid },
          stdio: ['ignore', shimOut.fd, shimOut.fd, 'pipe', listener.fd, keyDir.fd, feedFile ? feedFile.fd : 'pipe'],
          detached: true,
        },
      );
      await new Promise<void>((resolve, reject) => {
        child.once('spawn', resolve);
        child.once('error', reject);
      });
    } catch (e) {
      await cgroup?.remove();
      throw new ShoalError('unavailable', `starting ${QEMU} failed: ${(e as Error).message}`, { cause: e });
    } finally {
      for (const h of opened) await h.close();
    }
    const reports = lineReader(child.stdio[3] as Readable);
    const first = await within(reports.next(), 30_000);
    const created = /^created (\d+)/.exec(first ?? '');
    if (!created) {
      reports.close();
      sendSignal(-(child.pid as number), 'SIGKILL');
      await cgroup?.remove();
      throw new ShoalError('unavailable', `starting ${QEMU} failed: the shim reported ${first === undefined ? 'nothing' : JSON.stringify(first)} (QEMU's own message is in the instance log)`);
    }
    const pid = await readQemuPid(files.qemuPid, Number(created[1]));
    if (pid === undefined) {
      reports.close();
      sendSignal(-(child.pid as number), 'SIGKILL');
      await cgroup?.remove();
      throw new ShoalError('unavailable', `${QEMU} ended before it started (its own message is in the instance log)`);
    }
    const facts: VmFacts = { memoryMiB, cpus, templateDigest: template.digest, kernelRelease: k.release, accel: a };
    const inst = new VmInstance(spec, pid, cgroup, facts, { runAs: owner, log, holdLeadMs: options.migrationHoldLeadMs });
    inst.watchShim(child, reports, files.exit);
    live.set(spec.id, inst);
    void inst.exited.then(() => live.delete(spec.id));
    const startTime = (await readProcStat(pid))?.startTime ?? 0;
    const state: StateFile = { id: spec.id, pid, startTime, listenSocket: spec.listenSocket, facts };
    await writeFile(join(spec.stateDir, STATE_FILE), JSON.stringify(state));
    return { inst, hostPort, feed: mode.kind === 'incoming' ? (child.stdio as unknown as Duplex[])[6] : undefined };
  }

  /**
   * The guest serves: max-bandwidth for later captures, its first HTTP answer (`probe`), the
   * socket bridge. A guest that arrived by live migration was serving a moment ago: its
   * first answer would only cost a round trip through a cold TCG cache, which the first
   * real message pays anyway.
   */
  async function serve(inst: VmInstance, spec: InstanceSpec, hostPort: number, probe = true): Promise<void> {
    await inst.qmp!.execute('migrate-set-parameters', { 'max-bandwidth': MAX_BANDWIDTH });
    // Start resolves once the guest serves (a cold boot under TCG takes seconds).
    if (probe) await waitHttpAnswer(hostPort, () => inst.hasExited, BOOT_TIMEOUT_MS);
  }

  async function launch(spec: InstanceSpec, mode: LaunchMode): Promise<VmInstance> {
    const { inst, hostPort } = await spawnVm(spec, mode);
    try {
      const qmpSocket = join(spec.stateDir, QMP_SOCKET);
      if (mode.kind === 'restore') {
        inst.qmp = await connectQmp(qmpSocket);
        await mode.unpacked;
        await inst.qmp.execute('migrate-incoming', { uri: `fd:${FEED_FD}` });
        await waitStatus(inst.qmp, ['paused', 'running'], 60_000);
        await inst.qmp.execute('cont');
      } else {
        inst.qmp = await connectQmp(qmpSocket);
      }
      await serve(inst, spec, hostPort);
    } catch (e) {
      await inst.stop({ graceMs: 0 });
      throw e instanceof ShoalError ? e : new ShoalError('internal', `starting the VM of ${spec.id} failed: ${(e as Error).message}`, { cause: e });
    }
    return inst;
  }

  /**
   * A live migration's target (live.ts): QEMU waits with -incoming defer on a fresh overlay
   * of this host's root template; the agent's one-connection listener relays the source's
   * TLS stream to it. The offer carries the key and this VM's facts (the source checks them).
   */
  async function receive(spec: InstanceSpec): Promise<IncomingMigration> {
    const keyDir = join(spec.stateDir, KEY_DIR);
    const key = randomBytes(32).toString('hex');
    const { inst, hostPort, feed } = await spawnVm(spec, { kind: 'incoming' });
    let listener: Awaited<ReturnType<typeof openRelay>> | undefined;
    const fail = async (e: unknown): Promise<never> => {
      listener?.server.close();
      await inst.stop({ graceMs: 0 });
      await destroy(spec.id, spec.stateDir);
      throw e instanceof ShoalError ? e : new ShoalError('internal', `receiving the VM of ${spec.id} failed: ${(e as Error).message}`, { cause: e });
    };
    try {
      await writeKey(keyDir, key, inst.owner);
      inst.qmp = await connectQmp(join(spec.stateDir, QMP_SOCKET));
      await listenIncoming(inst.qmp);
      listener = await openRelay(migrationHost);
    } catch (e) {
      return fail(e);
    }
    const relayOpen = listener;
    let cancelled = false;
    const arrived = (async (): Promise<VmInstance> => {
      try {
        const timer = new Promise<'late'>((r) => setTimeout(() => r('late'), INCOMING_CONNECT_MS).unref());
        const first = await Promise.race([relayOpen.connected, timer, inst.exited.then(() => 'exited' as const)]);
        if (first === 'late') throw new ShoalError('timeout', `no migration stream came within ${INCOMING_CONNECT_MS} ms`);
        if (first === 'exited') throw new ShoalError('unavailable', cancelled ? 'the incoming migration was cancelled' : 'the target VM exited before its state came');
        let ended = false;
        void relay(first, feed!).then(() => (ended = true));
        const status = await waitIncoming(inst.qmp!, () => ended, () => inst.hasExited);
        await removeKey(keyDir);
        await endIncoming(inst.qmp!);
        if (status !== 'running') await inst.qmp!.execute('cont');
        await serve(inst, spec, hostPort, false);
        return inst;
      } catch (e) {
        return fail(e);
      }
    })();
    return {
      offer: { address: `${migrationHost}:${relayOpen.port}`, key, annotations: inst.annotations() },
      instance: arrived,
      async cancel() {
        cancelled = true;
        relayOpen.server.close();
        await inst.stop({ graceMs: 0 });
        await arrived.catch(() => undefined); // it rejects: cancelled
      },
    };
  }

  async function start(spec: InstanceSpec): Promise<VmInstance> {
    return launch(spec, { kind: 'start' });
  }

  async function restore(spec: InstanceSpec, state: CapturedState): Promise<VmInstance> {
    if (state.mediaType !== VM_STATE_MEDIA_TYPE) throw new ShoalError('invalid', `not a vm state: ${state.mediaType}`, { field: 'state.mediaType' });
    if (live.has(spec.id)) throw new ShoalError('conflict', `instance ${spec.id} is already running`, { field: 'id' });
    await mkdir(spec.stateDir, { recursive: true });
    // The state is the tenant's bytes: its annotations are checked against the spec, never
    // trusted for the machine's size (QEMU must get the same -m to load the saved RAM).
    if (state.annotations['org.shoal.vm.format'] !== VM_STATE_FORMAT) {
      throw new ShoalError('conflict', `the state is of vm format ${state.annotations['org.shoal.vm.format']}; this driver restores format ${VM_STATE_FORMAT}`, { field: 'state' });
    }
    const shape = machineShape(spec);
    const saved = { memoryMiB: state.annotations['org.shoal.vm.memory-mib'], cpus: state.annotations['org.shoal.vm.cpus'] };
    if (saved.memoryMiB !== String(shape.memoryMiB) || saved.cpus !== String(shape.cpus)) {
      throw new ShoalError('conflict', `the state was saved from a VM of ${saved.memoryMiB} MiB and ${saved.cpus} cpus; this spec's resources give ${shape.memoryMiB} MiB and ${shape.cpus} cpus`, { field: 'resources' });
    }
    const memory = join(spec.stateDir, MEMORY);
    try {
      const k = await ensureKernel();
      if (state.annotations['org.shoal.vm.kernel'] !== k.release) {
        throw new ShoalError('conflict', `the state was saved with kernel ${state.annotations['org.shoal.vm.kernel']}; this host has ${k.release}`, { field: 'state' });
      }
      const template = await rootTemplateFor(spec);
      const want = state.annotations['org.shoal.vm.root-template'];
      if (want !== template.digest) {
        throw new ShoalError('conflict', `the saved disk overlay was made on root disk ${want}; this host's is ${template.digest} (a different image or mke2fs)`, { field: 'state' });
      }
      // An overlay holds at most the guest's disk: the template, its room to grow, qcow2 metadata.
      const maxDiskBytes = template.bytes + (spec.resources.diskBytes ?? 0) + STATE_DISK_SLACK_BYTES;
      // QEMU's stream of the RAM: the pages (zero pages as a flag), headers and device state.
      const maxMemoryBytes = shape.memoryMiB * 1024 * 1024 + STATE_STREAM_SLACK_BYTES;
      const targets = { [MEMORY_ENTRY]: { path: memory, maxBytes: maxMemoryBytes }, [DISK_ENTRY]: { path: join(spec.stateDir, OVERLAY), maxBytes: maxDiskBytes } };
      // QEMU opens the RAM's file (its fd 5) at its start, before the RAM is written there.
      await writeFile(memory, '', { mode: 0o600 });
      let overlayWritten = (): void => {};
      const overlayUnpacked = new Promise<void>((resolve) => (overlayWritten = resolve));
      // A failed restore's overlay goes with its instance (destroy), not here: QEMU may hold it.
      const unpacking = unpackState(state.file, targets, (name) => name === DISK_ENTRY && overlayWritten());
      // The overlay comes first in states captured now (the RAM first in older ones: no overlap).
      await Promise.race([overlayUnpacked, unpacking]);
      try {
        // Resolves only after awaiting `unpacking` (launch loads the RAM once it is written).
        return await launch(spec, { kind: 'restore', memory, unpacked: unpacking });
      } catch (e) {
        // A start that failed because the state did (QEMU's own error would hide why) says so;
        // either way the unpacking has ended before the RAM's file is removed below.
        throw (await unpacking.then(() => undefined, (u: unknown) => u)) ?? e;
      }
    } finally {
      await rm(memory, { force: true });
    }
  }

  /**
   * After an agent restart: a VM whose QEMU still runs is re-attached (QMP again, a new
   * bridge to its forwarded port, its exit watched by pid, the status from the shim's exit
   * file); any other is removed.
   */
  async function recover(known: Array<{ id: string; stateDir: string }>): Promise<RecoveredInstance[]> {
    const out: RecoveredInstance[] = [];
    for (const { id, stateDir } of known) {
      const running = live.get(id);
      if (running) {
        out.push({ id, status: running.paused ? 'paused' : 'running', instance: running });
        continue;
      }
      const found = await reattach(id, stateDir).catch((e: unknown) => {
        log(`vm: re-attaching ${id} failed, removing it: ${(e as Error).message}`);
        return undefined;
      });
      if (found) {
        out.push({ id, status: found.paused ? 'paused' : 'running', instance: found });
        continue;
      }
      await destroy(id, stateDir);
      out.push({ id, status: 'stopped', instance: undefined });
    }
    return out;
  }

  async function reattach(id: string, stateDir: string): Promise<VmInstance | undefined> {
    const state = await readState(stateDir);
    if (!state || state.id !== id || !state.facts || !(await isAlive(state.pid, state.startTime))) return undefined;
    const owner = runAs ? await userIds(runAs) : undefined;
    const inst = new VmInstance({ id, stateDir }, state.pid, await createQemuCgroupHandle(id), state.facts, { runAs: owner, log, holdLeadMs: options.migrationHoldLeadMs });
    inst.watchPid(state.startTime, shimFiles(stateDir).exit);
    try {
      inst.qmp = await connectQmp(join(stateDir, QMP_SOCKET));
      const status = (await inst.qmp.execute<{ status: string }>('query-status')).status;
      inst.paused = status === 'paused';
      if (status !== 'running' && status !== 'paused') throw new Error(`QEMU reports ${status}`);
    } catch (e) {
      await inst.stop({ graceMs: 0 });
      throw e;
    }
    live.set(id, inst);
    void inst.exited.then(() => live.delete(id));
    return inst;
  }

  async function destroy(id: string, stateDir: string): Promise<void> {
    const inst = live.get(id);
    if (inst) await inst.stop({ graceMs: 0 });
    const state = await readState(stateDir);
    if (state && (await isAlive(state.pid, state.startTime))) {
      sendSignal(state.pid, 'SIGKILL');
      for (let i = 0; i < 100 && (await isAlive(state.pid, state.startTime)); i++) await delay(20);
    }
    if (state) await removeStaleSocket(state.listenSocket).catch((e: unknown) => log(`vm: ${(e as Error).message}`));
    const cg = await createQemuCgroupHandle(id);
    await cg?.remove();
    for (const f of [STATE_FILE, OVERLAY, SPEC_DISK, STATUS_DISK, QMP_SOCKET, MEMORY, KEYS, ...Object.values(shimFiles(stateDir)).map((p) => basename(p))]) await rm(join(stateDir, f), { recursive: true, force: true });
  }

  async function close(): Promise<void> {
    closed = true;
    // Running VMs stay (Driver.close), with their bridges and shims.
    for (const inst of live.values()) inst.detach();
    live.clear();
  }

  const declared = { ...capabilities, liveMigrates: options.liveMigration ?? process.env.SHOAL_VM_LIVE_MIGRATION === '1' };
  return { name: 'vm', capabilities: declared, fingerprint, start, restore, receive, recover, destroy, close } satisfies Driver & RestoringDriver & LiveReceivingDriver;
}
/** The cgroup of a VM that start() made, for removal (its limits do not matter here). */
async function createQemuCgroupHandle(id: string): Promise<QemuCgroup | undefined> {
  const { rmdir } = await import('node:fs/promises');
  const dirs = ['memory', 'cpu', ''].map((c) => join('/sys/fs/cgroup', c, 'shoal', `vm-${id}`));
  return {
    procs: [],
    remove: async () => {
      for (const d of dirs) await rmdir(d).catch(() => undefined); // absent on this host's layout
    },
  };
}

async function waitStatus(qmp: Qmp, wanted: string[], timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await qmp.execute<{ status: string }>('query-status');
    if (wanted.includes(s.status)) return s.status;
    if (Date.now() > deadline) throw new ShoalError('timeout', `VM status ${s.status}, expected ${wanted.join(' or ')}`);
    await delay(10);
  }
}

/** QEMU's pid from its -pidfile, once written; undefined if the bridge (its parent) ended first. */
async function readQemuPid(file: string, bridgePid: number): Promise<number | undefined> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const pid = await readPidFile(file);
    if (pid !== undefined) return pid;
    if (!(await isAlive(bridgePid, undefined))) return undefined;
    await delay(5);
  }
  return undefined;
}

/** uid and gid of a user name, from /etc/passwd (QEMU 7.2's -runas takes a name). */
async function userIds(name: string): Promise<{ uid: number; gid: number }> {
  const row = (await readFile('/etc/passwd', 'utf8')).split('\n').map((l) => l.split(':')).find((r) => r[0] === name);
  if (!row) throw new ShoalError('unavailable', `user ${name} (for QEMU's -runas) is not in /etc/passwd`);
  return { uid: Number(row[2]), gid: Number(row[3]) };
}
