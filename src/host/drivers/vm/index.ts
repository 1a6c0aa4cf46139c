// The `vm` driver: each instance is a QEMU virtual machine booted from the kernel
// template (PVH, uncompressed; kernel.ts in src/image/templates) with the image's layers
// as its root disk: a qcow2 template per layer stack, shared read-only, and a qcow2
// overlay per instance (disks.ts). The guest's shoal-run listens on TCP and hands the
// service fd 3 (LISTEN_FDS=1), QEMU's restricted user network forwards a loopback port
// to it, and the driver bridges the instance socket to that port (bridge.ts).
// Control goes through QMP: pause/resume (stop/cont); capture = stop, migrate the RAM to
// a loopback stream the host compresses with zstd, copy the overlay, cont; restore =
// start QEMU with -incoming from the saved RAM and the copied overlay, then cont.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { chown, mkdir, open, readdir, readFile, rm, stat, writeFile, type FileHandle } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { Transform, type Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createZstdCompress, createZstdDecompress } from 'node:zlib';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import tar from 'tar-stream';
import { ShoalError } from '../../../protocol/index.ts';
import { assembleKernel, readKernelFiles, type KernelFiles } from '../../../image/index.ts';
import type {
  CapturedState,
  CapturingInstance,
  Driver,
  DriverCapabilities,
  DriverFingerprint,
  InstanceExit,
  InstanceSpec,
  IncomingMigration,
  InstanceStats,
  LiveMigratingInstance,
  LiveMigrationStats,
  LiveReceivingDriver,
  MigrationHold,
  MigrationOffer,
  PausableInstance,
  RecoveredInstance,
  RestoringDriver,
} from '../driver.ts';
import { openCappedLog } from '../shared/capped-log.ts';
import { removeStaleSocket } from '../shared/listener.ts';
import { delay, isAlive, NANOS_PER_TICK, readProcStat, readStatusField, sendSignal, within } from '../shared/proc.ts';
import { createBridge, freeLoopbackPort, waitHttpAnswer, type Bridge } from './bridge.ts';
import { createOverlay, ensureRootTemplate, GUEST_PORT, layerStackKey, rebaseOverlay, writeSpecDisk, type RootTemplate } from './disks.ts';
import { connectQmp, type Qmp } from './qmp.ts';
import { checkFacts, endIncoming, INCOMING_CONNECT_MS, listenIncoming, makeKeyDir, MAX_BANDWIDTH, openRelay, relay, removeKey, sendLive, waitIncoming, writeKey } from './live.ts';
import { createQemuCgroup, guestExitCode, MACHINE, probeAccel, QEMU, qemuArgs, type Accel, type QemuCgroup } from './qemu.ts';

const run = promisify(execFile);

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

export const VM_STATE_MEDIA_TYPE = 'application/vnd.shoal.state.vm.v1.tar';

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
}

/** What start() leaves in stateDir so destroy() and recover() can find QEMU again. */
interface StateFile {
  id: string;
  pid: number;
  startTime: number;
  listenSocket: string;
}

const STATE_FILE = 'vm.json';
const OVERLAY = 'disk.qcow2';
const SPEC_DISK = 'spec.img';
const QMP_SOCKET = 'qmp.sock';
const DEFAULT_GRACE_MS = 2000;
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

type LaunchMode = { kind: 'start' } | { kind: 'restore'; memory: string } | { kind: 'incoming' };

/** Where a live migration's key file lives while the move runs (live.ts). */
const KEY_DIR = 'migration-key';

export function createVmDriver(options: VmDriverOptions) {
  const log = options.log ?? ((m: string) => console.warn(m));
  const vmDir = options.dataDir;
  const rootsDir = join(vmDir, 'roots');
  const runAs = options.runAs === false ? undefined : (options.runAs ?? (process.getuid?.() === 0 ? 'nobody' : undefined));
  const minMemoryMiB = options.minMemoryMiB ?? 128;
  const migrationHost = options.migrationHost ?? '127.0.0.1';
  const live = new Map<string, VmInstance>();
  let kernel: Promise<KernelFiles> | undefined;
  let accel: Promise<{ accel: Accel; detail: string }> | undefined;
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
    accel ??= probeAccel(k.vmlinux, k.initrd);
    return accel;
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
    // A live migration's key goes here (live.ts); QEMU gets the directory as fd 4.
    await makeKeyDir(join(spec.stateDir, KEY_DIR), owner);
    // From spec.resources only (a restore checks the state's annotations agree, never uses them).
    const { memoryMiB, cpus } = machineShape(spec);
    const qmpSocket = join(spec.stateDir, QMP_SOCKET);
    await removeStaleSocket(qmpSocket);
    const cgroup = await createQemuCgroup(spec.id, memoryMiB * 1024 * 1024 + QEMU_OVERHEAD_BYTES, spec.resources.cpuMillis);
    const hostPort = await freeLoopbackPort();
    const args = qemuArgs({
      accel: a,
      vmlinux: k.vmlinux,
      initrd: k.initrd,
      overlay,
      specDisk: join(spec.stateDir, SPEC_DISK),
      hostPort,
      guestPort: GUEST_PORT,
      memoryMiB,
      cpus,
      qmpSocket,
      runAs,
      ...(mode.kind === 'restore' ? { incoming: 'fd:3' } : mode.kind === 'incoming' ? { incoming: 'defer' } : {}),
    });
    let child: ChildProcess;
    let keyDir: FileHandle | undefined;
    try {
      keyDir = await open(join(spec.stateDir, KEY_DIR), 'r');
      // The shell puts itself (then, by exec, QEMU) in the cgroup before QEMU starts.
      child = spawn('/bin/sh', ['-c', 'for f in $SHOAL_CGROUP_PROCS; do echo $$ > "$f" || exit 125; done; exec "$@"', 'sh', QEMU, ...args], {
        env: { PATH: '/usr/bin:/bin', SHOAL_CGROUP_PROCS: cgroup?.procs.join(' ') ?? '' },
        // The serial console (QEMU's stdout) is the guest's to fill: it goes through the
        // capped writer, like runc's shim log. VMs are never re-attached after an agent
        // restart, so the pipe ending with the agent loses nothing that was kept.
        // fd 3: the saved state (restore) or the migration stream (incoming), a socket pair;
        // fd 4: the key directory (live.ts KEY_FD).
        stdio: ['ignore', 'pipe', 'pipe', mode.kind === 'start' ? 'ignore' : 'pipe', keyDir.fd],
      });
      const consoleLog = openCappedLog(spec.logFile);
      if (child.stdout) consoleLog.attach(child.stdout);
      if (child.stderr) consoleLog.attach(child.stderr);
      child.once('close', () => void consoleLog.close());
      await new Promise<void>((resolve, reject) => {
        child.once('spawn', resolve);
        child.once('error', reject);
      });
    } catch (e) {
      await cgroup?.remove();
      throw new ShoalError('unavailable', `starting ${QEMU} failed: ${(e as Error).message}`, { cause: e });
    } finally {
      await keyDir?.close();
    }
    const pid = child.pid as number;
    const inst = new VmInstance(spec, pid, child, cgroup, { memoryMiB, cpus, template, kernel: k, accel: a }, { runAs: owner, log, holdLeadMs: options.migrationHoldLeadMs });
    live.set(spec.id, inst);
    void inst.exited.then(() => live.delete(spec.id));
    const startTime = (await readProcStat(pid))?.startTime ?? 0;
    const state: StateFile = { id: spec.id, pid, startTime, listenSocket: spec.listenSocket };
    await writeFile(join(spec.stateDir, STATE_FILE), JSON.stringify(state));
    return { inst, hostPort, feed: mode.kind === 'start' ? undefined : (child.stdio[3] as Duplex) };
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
    inst.bridge = await createBridge(spec.listenSocket, hostPort);
  }

  async function launch(spec: InstanceSpec, mode: LaunchMode): Promise<VmInstance> {
    const { inst, hostPort, feed } = await spawnVm(spec, mode);
    try {
      const qmpSocket = join(spec.stateDir, QMP_SOCKET);
      if (mode.kind === 'restore') {
        const sent = pipeline(createReadStream(mode.memory), createZstdDecompress(), feed!);
        inst.qmp = await connectQmp(qmpSocket);
        await sent;
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
    const shape = machineShape(spec);
    const saved = { memoryMiB: state.annotations['org.shoal.vm.memory-mib'], cpus: state.annotations['org.shoal.vm.cpus'] };
    if (saved.memoryMiB !== String(shape.memoryMiB) || saved.cpus !== String(shape.cpus)) {
      throw new ShoalError('conflict', `the state was saved from a VM of ${saved.memoryMiB} MiB and ${saved.cpus} cpus; this spec's resources give ${shape.memoryMiB} MiB and ${shape.cpus} cpus`, { field: 'resources' });
    }
    const memory = join(spec.stateDir, 'memory.zst');
    try {
      const template = await rootTemplateFor(spec);
      const want = state.annotations['org.shoal.vm.root-template'];
      if (want !== template.digest) {
        throw new ShoalError('conflict', `the saved disk overlay was made on root disk ${want}; this host's is ${template.digest} (a different image or mke2fs)`, { field: 'state' });
      }
      // An overlay holds at most the guest's disk: the template, its room to grow, qcow2 metadata.
      const maxDiskBytes = template.bytes + (spec.resources.diskBytes ?? 0) + STATE_DISK_SLACK_BYTES;
      await unpackState(state.file, { 'memory.zst': memory, 'disk.qcow2.zst': join(spec.stateDir, OVERLAY) }, maxDiskBytes).catch(async (e: unknown) => {
        await rm(join(spec.stateDir, OVERLAY), { force: true });
        throw e;
      });
      const k = await ensureKernel();
      if (state.annotations['org.shoal.vm.kernel'] !== k.release) {
        throw new ShoalError('conflict', `the state was saved with kernel ${state.annotations['org.shoal.vm.kernel']}; this host has ${k.release}`, { field: 'state' });
      }
      return await launch(spec, { kind: 'restore', memory });
    } finally {
      await rm(memory, { force: true });
    }
  }

  async function recover(known: Array<{ id: string; stateDir: string }>): Promise<RecoveredInstance[]> {
    const out: RecoveredInstance[] = [];
    for (const { id, stateDir } of known) {
      const running = live.get(id);
      if (running) {
        out.push({ id, status: running.paused ? 'paused' : 'running', instance: running });
        continue;
      }
      // The bridge and the QMP connection lived in the agent that went away: a VM is not
      // re-attached, it is stopped and its leftovers removed.
      await destroy(id, stateDir);
      out.push({ id, status: 'stopped', instance: undefined });
    }
    return out;
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
    for (const f of [STATE_FILE, OVERLAY, SPEC_DISK, QMP_SOCKET, 'memory.zst', KEY_DIR]) await rm(join(stateDir, f), { recursive: true, force: true });
  }

  async function close(): Promise<void> {
    closed = true;
    // Running VMs stay (Driver.close); their bridges go with this process.
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

interface VmFacts {
  memoryMiB: number;
  cpus: number;
  template: RootTemplate;
  kernel: KernelFiles;
  accel: Accel;
}

class VmInstance implements PausableInstance, CapturingInstance, LiveMigratingInstance {
  readonly id: string;
  readonly pid: number;
  readonly exited: Promise<InstanceExit>;
  paused = false;
  qmp: Qmp | undefined;
  bridge: Bridge | undefined;
  private stopping = false;
  private done = false;
  get hasExited(): boolean {
    return this.done;
  }
  private resolveExit!: (e: InstanceExit) => void;

  private readonly spec: InstanceSpec;
  private readonly cgroup: QemuCgroup | undefined;
  private readonly facts: VmFacts;
  /** uid/gid QEMU runs as (-runas), for the files it must read after the drop. */
  readonly owner: { uid: number; gid: number } | undefined;
  private readonly log: (m: string) => void;
  private readonly holdLeadMs: number | undefined;
  /** Sent away by a live migration: nothing runs here any more. */
  private migrated = false;

  constructor(spec: InstanceSpec, pid: number, child: ChildProcess, cgroup: QemuCgroup | undefined, facts: VmFacts, o: { runAs: { uid: number; gid: number } | undefined; log: (m: string) => void; holdLeadMs: number | undefined }) {
    this.spec = spec;
    this.cgroup = cgroup;
    this.facts = facts;
    this.owner = o.runAs;
    this.log = o.log;
    this.holdLeadMs = o.holdLeadMs;
    this.id = spec.id;
    this.pid = pid;
    this.exited = new Promise((r) => {
      this.resolveExit = r;
    });
    child.once('exit', (status, signal) => void this.settle(status, signal));
  }

  private async settle(status: number | null, signal: NodeJS.Signals | null): Promise<void> {
    if (this.done) return;
    this.done = true;
    this.qmp?.close();
    await this.bridge?.close();
    await this.cgroup?.remove();
    await rm(join(this.spec.stateDir, STATE_FILE), { force: true });
    const code = guestExitCode(status);
    const reason = this.stopping ? 'killed' : code === 0 ? 'exited' : 'crashed';
    this.resolveExit({ reason, code: this.stopping ? undefined : code, signal: signal ?? undefined, at: Date.now() });
  }

  /** The driver goes away: let go of QMP and the bridge, leave QEMU running. */
  detach(): void {
    this.qmp?.close();
    void this.bridge?.close();
  }

  async stop(options: { graceMs?: number } = {}): Promise<void> {
    if (this.done) {
      await this.exited;
      return;
    }
    this.stopping = true;
    const grace = options.graceMs ?? DEFAULT_GRACE_MS;
    if (grace > 0) {
      // QEMU ends the guest at once on SIGTERM (the guest has nothing to flush: its disk is per instance).
      sendSignal(this.pid, 'SIGTERM');
      if ((await within(this.exited, grace)) !== undefined) return;
    }
    sendSignal(this.pid, 'SIGKILL');
    await this.exited;
  }

  private control(): Qmp {
    if (this.done || !this.qmp) throw new ShoalError('conflict', `instance ${this.id} has exited`);
    if (this.migrated) throw new ShoalError('conflict', `instance ${this.id} was migrated away`);
    return this.qmp;
  }

  /** What a state of this VM fits (a restore and a live migration's source check them). */
  annotations(): Record<string, string> {
    return {
      'org.shoal.driver': 'vm',
      'org.shoal.vm.format': '1',
      'org.shoal.vm.machine': MACHINE,
      'org.shoal.vm.accel': this.facts.accel,
      'org.shoal.vm.memory-mib': String(this.facts.memoryMiB),
      'org.shoal.vm.cpus': String(this.facts.cpus),
      'org.shoal.vm.kernel': this.facts.kernel.release,
      'org.shoal.vm.root-template': this.facts.template.digest,
    };
  }

  async migrateTo(offer: MigrationOffer, hold: MigrationHold): Promise<LiveMigrationStats> {
    const qmp = this.control();
    if (this.paused) throw new ShoalError('conflict', `instance ${this.id} is paused; resume it to migrate it live`);
    checkFacts(this.annotations(), offer.annotations);
    const keyDir = join(this.spec.stateDir, KEY_DIR);
    await writeKey(keyDir, offer.key, this.owner);
    const stats = await sendLive(qmp, { address: offer.address, keyDir, hold, holdLeadMs: this.holdLeadMs, log: this.log });
    // The guest now runs on the target; this QEMU stays (postmigrate) until the instance is removed.
    this.migrated = true;
    return stats;
  }

  async resumeHere(): Promise<void> {
    if (this.done || !this.qmp) throw new ShoalError('conflict', `instance ${this.id} has exited`);
    if (!this.migrated) return;
    // cont after a completed migration re-activates the disks (as after a capture).
    await this.qmp.execute('cont');
    this.migrated = false;
  }

  async pause(): Promise<void> {
    await this.control().execute('stop');
    this.paused = true;
  }

  async resume(): Promise<void> {
    await this.control().execute('cont');
    this.paused = false;
  }

  async capture(dir: string): Promise<CapturedState> {
    const qmp = this.control();
    const tag = randomBytes(4).toString('hex');
    const memory = join(dir, `.vm-memory-${tag}.zst`);
    const disk = join(dir, `.vm-disk-${tag}.qcow2.zst`);
    const file = join(dir, `vm-state-${this.id}-${tag}.tar`);
    const wasPaused = this.paused;
    try {
      if (!wasPaused) await qmp.execute('stop');
      // QEMU (sandboxed: no spawn) sends its RAM to a loopback stream the host compresses.
      const received = await receiveOnce(memory);
      await qmp.execute('migrate', { uri: `tcp:127.0.0.1:${received.port}` });
      await waitMigration(qmp);
      await received.done;
      // The block devices are flushed and inactive now: the overlay matches the RAM.
      await pipeline(createReadStream(join(this.spec.stateDir, OVERLAY)), createZstdCompress(), createWriteStream(disk));
      await packState(file, { 'memory.zst': memory, 'disk.qcow2.zst': disk });
    } finally {
      await rm(memory, { force: true });
      await rm(disk, { force: true });
      // Back to what it was (cont after a completed migration re-activates the disks).
      if (!wasPaused && !this.done) await qmp.execute('cont');
    }
    return { mediaType: VM_STATE_MEDIA_TYPE, file, annotations: this.annotations() };
  }

  async stats(): Promise<InstanceStats> {
    const st = await readProcStat(this.pid);
    if (!st) return { memoryBytes: undefined, cpuUsageNanos: undefined, pids: undefined };
    const rss = await readStatusField(this.pid, 'VmRSS');
    const threads = await readStatusField(this.pid, 'Threads');
    return {
      memoryBytes: rss === undefined ? undefined : Number.parseInt(rss, 10) * 1024,
      cpuUsageNanos: (st.utimeTicks + st.stimeTicks) * NANOS_PER_TICK,
      pids: threads === undefined ? undefined : Number(threads),
    };
  }
}

async function waitMigration(qmp: Qmp): Promise<void> {
  for (;;) {
    const m = await qmp.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
    if (m.status === 'completed') return;
    if (m.status === 'failed' || m.status === 'cancelled') throw new ShoalError('internal', `saving the VM's memory failed: ${m['error-desc'] ?? m.status} (QEMU's own message is in the instance log)`);
    await delay(5);
  }
}

/**
 * One connection on a fresh loopback port, written zstd-compressed to `file`. The port
 * is open only while a capture runs, and only the first connection is taken.
 */
async function receiveOnce(file: string): Promise<{ port: number; done: Promise<void> }> {
  const server = createServer();
  const done = new Promise<void>((resolve, reject) => {
    server.once('connection', (sock: Socket) => {
      server.close();
      pipeline(sock, createZstdCompress(), createWriteStream(file, { mode: 0o600 })).then(resolve, reject);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const a = server.address();
  return { port: typeof a === 'object' && a ? a.port : 0, done };
}

async function packState(file: string, entries: Record<string, string>): Promise<void> {
  const pack = tar.pack();
  const out = pipeline(pack, createWriteStream(file, { mode: 0o600 }));
  for (const [name, path] of Object.entries(entries)) {
    const size = (await stat(path)).size;
    await new Promise<void>((resolve, reject) => {
      const entry = pack.entry({ name, size, mode: 0o600 }, (e) => (e ? reject(e) : resolve()));
      createReadStream(path).on('error', reject).pipe(entry);
    });
  }
  pack.finalize();
  await out;
}

/** The state file's entries, decompressed, to host-owned paths (unknown entries refused). */
/** Unpacks a saved state's entries to `targets`; the disk entry may not decompress past `maxDiskBytes`. Exported for tests. */
export async function unpackState(file: string, targets: Record<string, string>, maxDiskBytes: number): Promise<void> {
  const extract = tar.extract();
  const seen = new Set<string>();
  extract.on('entry', (header, stream, next) => {
    const target = Object.hasOwn(targets, header.name) ? targets[header.name] : undefined;
    if (!target || header.type !== 'file' || seen.has(header.name)) {
      stream.destroy();
      extract.destroy(new ShoalError('invalid', `unexpected entry ${header.name} in a vm state`, { field: 'state' }));
      return;
    }
    seen.add(header.name);
    // memory stays compressed (it is streamed into QEMU); the disk is decompressed.
    const sink = header.name === 'memory.zst' ? createWriteStream(target, { mode: 0o600 }) : null;
    const p = sink ? pipeline(stream, sink) : pipeline(stream, createZstdDecompress(), sizeLimit(maxDiskBytes, header.name), createWriteStream(target, { mode: 0o600 }));
    p.then(() => next(), (e: unknown) => extract.destroy(e as Error));
  });
  await pipeline(createReadStream(file), extract);
  for (const name of Object.keys(targets)) if (!seen.has(name)) throw new ShoalError('invalid', `vm state lacks ${name}`, { field: 'state' });
}

/** Passes bytes through until `max`, then fails: a small compressed entry must not fill the disk. */
export function sizeLimit(max: number, name: string): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      seen += chunk.length;
      if (seen > max) done(new ShoalError('invalid', `${name} in the vm state decompresses to more than ${max} bytes`, { field: 'state' }));
      else done(null, chunk);
    },
  });
}

async function readState(stateDir: string): Promise<StateFile | undefined> {
  try {
    return JSON.parse(await readFile(join(stateDir, STATE_FILE), 'utf8')) as StateFile;
  } catch {
    return undefined;
  }
}

/** uid and gid of a user name, from /etc/passwd (QEMU 7.2's -runas takes a name). */
async function userIds(name: string): Promise<{ uid: number; gid: number }> {
  const row = (await readFile('/etc/passwd', 'utf8')).split('\n').map((l) => l.split(':')).find((r) => r[0] === name);
  if (!row) throw new ShoalError('unavailable', `user ${name} (for QEMU's -runas) is not in /etc/passwd`);
  return { uid: Number(row[2]), gid: Number(row[3]) };
}
