// One running VM: QEMU under shoal-shim, controlled over QMP. Its exit comes from the
// shim (a VM this agent started) or from watching its pid (one re-attached after an agent
// restart); what the guest's service did comes from the status disk (status.ts).
import { type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createZstdCompress } from 'node:zlib';
import { ShoalError } from '../../../protocol/index.ts';
import type {
  CapturedState,
  CapturingInstance,
  InstanceExit,
  InstanceStats,
  LiveMigratingInstance,
  LiveMigrationStats,
  MigrationHold,
  MigrationOffer,
  PausableInstance,
} from '../driver.ts';
import { lineReader, parseExitLine, readExitFile, type ShimExit } from '../shared/shim-reports.ts';
import { delay, NANOS_PER_TICK, readProcStat, readStatusField, sendSignal, watchExit, within } from '../shared/proc.ts';
import { checkFacts, sendLive, writeKey } from './live.ts';
import { guestExitCode, MACHINE, type QemuCgroup } from './qemu.ts';
import type { Qmp } from './qmp.ts';
import { DISK_ENTRY, MEMORY_ENTRY, packState, receiveOnce, STATE_STREAM_SLACK_BYTES, VM_STATE_FORMAT, VM_STATE_MEDIA_TYPE, waitMigration, ZSTD_CHUNKS } from './saved-state.ts';
import { KEY_DIR, OVERLAY, STATUS_DISK, type VmFacts } from './state-dir.ts';
import { readStatusDisk } from './status.ts';

const DEFAULT_GRACE_MS = 2000;

export class VmInstance implements PausableInstance, CapturingInstance, LiveMigratingInstance {
  readonly id: string;
  readonly pid: number;
  readonly exited: Promise<InstanceExit>;
  paused = false;
  qmp: Qmp | undefined;
  private stopping = false;
  private done = false;
  get hasExited(): boolean {
    return this.done;
  }
  private resolveExit!: (e: InstanceExit) => void;

  private readonly stateDir: string;
  private readonly cgroup: QemuCgroup | undefined;
  private readonly facts: VmFacts;
  /** uid/gid QEMU runs as (-runas), for the files it must read after the drop. */
  readonly owner: { uid: number; gid: number } | undefined;
  private readonly log: (m: string) => void;
  private readonly holdLeadMs: number | undefined;
  /** Sent away by a live migration: nothing runs here any more. */
  private migrated = false;

  constructor(spec: { id: string; stateDir: string }, pid: number, cgroup: QemuCgroup | undefined, facts: VmFacts, o: { runAs: { uid: number; gid: number } | undefined; log: (m: string) => void; holdLeadMs: number | undefined }) {
    this.stateDir = spec.stateDir;
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
  }

  /** QEMU's exit as its shim reports it (a started VM: the shim is this agent's child). */
  watchShim(child: ChildProcess, reports: ReturnType<typeof lineReader>, exitFile: string): void {
    let reported = false;
    reports.onLine((line) => {
      const exit = parseExitLine(line);
      if (!exit) return;
      reported = true;
      void this.settle(exit);
    });
    // The shim always reports; if it died instead, QEMU is an orphan we can only watch go.
    const onShimExit = (): void => {
      setTimeout(() => {
        if (reported || this.done) return;
        void this.watchPid(undefined, exitFile);
      }, 50);
    };
    child.once('exit', onShimExit);
    this.release = () => {
      reports.close();
      child.off('exit', onShimExit);
      child.unref();
    };
  }

  /** QEMU's exit by polling its pid, then the shim's exit file (a re-attached VM). */
  watchPid(startTime: number | undefined, exitFile: string): void {
    const stop = watchExit(this.pid, startTime, () => {
      void (async () => {
        // The shim writes the file right after reaping QEMU: give it a moment.
        let exit = await readExitFile(exitFile);
        for (let i = 0; !exit && i < 20; i++) {
          await delay(25);
          exit = await readExitFile(exitFile);
        }
        await this.settle(exit ?? { code: undefined, signal: undefined });
      })();
    });
    this.release = stop;
  }

  private release: () => void = () => undefined;

  private async settle(exit: ShimExit): Promise<void> {
    if (this.done) return;
    this.done = true;
    this.release();
    this.qmp?.close();
    await this.cgroup?.remove();
    // vm.json stays until destroy: it names the instance socket destroy removes.
    if (this.stopping) {
      this.resolveExit({ reason: 'killed', code: undefined, signal: exit.signal, at: Date.now() });
      return;
    }
    // shoal-run's status disk says it all; without it (the guest died some other way), the
    // low 7 bits from the exit port, else QEMU's own end (a signal, a host OOM kill).
    const guest = await readStatusDisk(join(this.stateDir, STATUS_DISK));
    if (guest) {
      const reason = guest.oom ? 'oom' : guest.code === 0 ? 'exited' : 'crashed';
      this.resolveExit({ reason, code: guest.code, signal: guest.signal, at: Date.now() });
      return;
    }
    const code = guestExitCode(exit.code ?? null);
    this.resolveExit({ reason: code === 0 ? 'exited' : 'crashed', code, signal: exit.signal, at: Date.now() });
  }

  /** The driver goes away: let go of QMP and the shim's reports, leave QEMU running. */
  detach(): void {
    this.release();
    this.qmp?.close();
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
      // 2: the status disk joined the device line (a format-1 state cannot restore).
      'org.shoal.vm.format': VM_STATE_FORMAT,
      'org.shoal.vm.machine': MACHINE,
      'org.shoal.vm.accel': this.facts.accel,
      'org.shoal.vm.memory-mib': String(this.facts.memoryMiB),
      'org.shoal.vm.cpus': String(this.facts.cpus),
      'org.shoal.vm.kernel': this.facts.kernelRelease,
      'org.shoal.vm.root-template': this.facts.templateDigest,
    };
  }

  async migrateTo(offer: MigrationOffer, hold: MigrationHold): Promise<LiveMigrationStats> {
    const qmp = this.control();
    if (this.paused) throw new ShoalError('conflict', `instance ${this.id} is paused; resume it to migrate it live`);
    checkFacts(this.annotations(), offer.annotations);
    const keyDir = join(this.stateDir, KEY_DIR);
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
      const received = await receiveOnce(memory, this.facts.memoryMiB * 1024 * 1024 + STATE_STREAM_SLACK_BYTES);
      try {
        await qmp.execute('migrate', { uri: `tcp:127.0.0.1:${received.port}` });
        await waitMigration(qmp);
        await received.done;
      } finally {
        received.close();
      }
      // The block devices are flushed and inactive now: the overlay matches the RAM.
      await pipeline(createReadStream(join(this.stateDir, OVERLAY), { highWaterMark: 1 << 20 }), createZstdCompress(ZSTD_CHUNKS), createWriteStream(disk));
      // The overlay first: a restore starts QEMU with it while the RAM is still unpacking.
      await packState(file, { [DISK_ENTRY]: disk, [MEMORY_ENTRY]: memory });
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
