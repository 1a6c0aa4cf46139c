// The `process` driver: runs an instance as a plain child process of the agent, for
// machines without runc (a laptop, a non-root user). It does NOT isolate anything: the
// program sees the host's file system, network and processes with the agent's
// privileges (or, when the agent is root, those of spec.user).
//
// How a spec maps onto a host process:
// - The program is NOT chrooted. args[0] is looked up inside spec.rootfs (absolute paths
//   are taken relative to the rootfs; bare names are searched on the spec's PATH inside
//   the rootfs); any later argument that is an absolute path existing inside the rootfs
//   is rewritten to its host path (so `node /app/server.js` works); cwd is spec.cwd
//   inside the rootfs.
// - The environment is exactly spec.env (nothing of the agent's leaks in), plus
//   LISTEN_FDS=1: the listening socket, made by the driver at spec.listenSocket, is fd 3.
//   Because there is no mount namespace, the agent must put the HOST path of
//   spec.importsDir in SHOAL_IMPORTS for this driver.
// - stdout and stderr go to spec.logFile. The process leads its own process group, and
//   pause/stop signal the whole group; when the program exits, what is left of its group
//   is killed (as a pid namespace would).
// - The $PORT contract (spec.tcpPort): with no network namespace, every instance shares
//   the host's; the driver picks a free loopback port, sets PORT to it and runs the port
//   bridge in front of the program. This isolates nothing: any local process may connect
//   to that port, and the program may listen anywhere.
import { spawn, type ChildProcess } from 'node:child_process';
import { access, constants as fsConstants, mkdir, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { release } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { ShoalError } from '../../../protocol/index.ts';
import type {
  Driver,
  DriverCapabilities,
  DriverFingerprint,
  InstanceExit,
  InstanceSpec,
  InstanceStats,
  PausableInstance,
  RecoveredInstance,
} from '../driver.ts';
import { createInheritedListener, LISTEN_ENV } from '../shared/listener.ts';
import { freeLoopbackPort, portBridgeCopy } from '../shared/port-bridge.ts';
import { delay, isAlive, NANOS_PER_TICK, readProcStat, readStatusField, sendSignal, signalName, watchExit, within } from '../shared/proc.ts';

export const capabilities = {
  isolation: 'none',
  canPause: true,
  canSnapshot: false,
  canMigrate: false,
  canClone: false,
  enforcesLimits: false,
  servesPort: true,
} as const satisfies DriverCapabilities;

export interface ProcessDriverOptions {
  /** Where the driver's one warning goes (default console.warn). */
  log?: (message: string) => void;
}

/** What start() leaves in stateDir so a restarted agent can find the process again. */
interface StateFile {
  id: string;
  pid: number;
  startTime: number;
}

const STATE_FILE = 'process.json';
const DEFAULT_GRACE_MS = 5000;

export function createProcessDriver(options: ProcessDriverOptions = {}) {
  const log = options.log ?? ((m: string) => console.warn(m));
  const asRoot = process.getuid?.() === 0;
  log(
    "WARNING: the 'process' driver does NOT isolate instances. They run as plain host processes " +
      'that can read and write the host file system, reach the network and see other processes' +
      (asRoot ? ' (running as the uid:gid each spec names).' : ", with this agent's own user.") +
      ' Use the runc driver for anything you do not fully trust.',
  );

  /** Per-instance teardown of watchers, run by close(). */
  const detachers = new Map<string, () => void>();
  const live = new Map<string, ProcessInstance>();
  let closed = false;

  async function fingerprint(): Promise<DriverFingerprint> {
    return {
      healthy: true,
      detail: 'runs instances as plain child processes, with no isolation and no resource limits',
      attributes: { isolation: 'none', root: String(asRoot), kernel: release() },
    };
  }

  async function start(spec: InstanceSpec): Promise<ProcessInstance> {
    if (closed) throw new ShoalError('unavailable', 'the process driver is closed');
    if (live.has(spec.id)) throw new ShoalError('conflict', `instance ${spec.id} is already running`, { field: 'id' });
    if (spec.args.length === 0) throw new ShoalError('invalid', 'spec.args is empty: nothing to run', { field: 'args' });
    const env = envObject([...spec.env, ...LISTEN_ENV]);
    let program = await resolveProgram(spec.rootfs, spec.args[0] as string, spec.cwd, env.PATH);
    let args = await Promise.all(spec.args.slice(1).map((a) => hostPathIfInside(spec.rootfs, a)));
    if (spec.tcpPort !== undefined) {
      const port = await freeLoopbackPort();
      env.PORT = String(port);
      args = [String(port), program, ...args];
      program = await portBridgeCopy(spec.stateDir, undefined);
    }
    const cwd = join(spec.rootfs, spec.cwd);
    await mkdir(spec.stateDir, { recursive: true });
    const listener = await createInheritedListener(spec.listenSocket);
    const logHandle = await open(spec.logFile, 'a');
    let child: ChildProcess;
    let earlyExit: [number | null, NodeJS.Signals | null] | undefined;
    let settleWith: ((code: number | null, signal: NodeJS.Signals | null) => void) | undefined;
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
      if (settleWith) settleWith(code, signal);
      else earlyExit = [code, signal];
    };
    try {
      child = spawn(program, args, {
        cwd,
        env,
        argv0: spec.args[0],
        stdio: ['ignore', logHandle.fd, logHandle.fd, listener.fd],
        detached: true,
        ...(asRoot ? { uid: spec.user.uid, gid: spec.user.gid } : {}),
      });
      await new Promise<void>((resolve, reject) => {
        child.once('spawn', resolve);
        child.once('error', reject);
      });
      // Listen for the exit before any further await: a program that dies at once would
      // otherwise exit unheard, and its instance would never settle.
      child.once('exit', onExit);
    } catch (e) {
      throw new ShoalError('invalid', `starting ${spec.args[0]} for instance ${spec.id} failed: ${(e as Error).message}`, { field: 'args', cause: e });
    } finally {
      await logHandle.close();
      await listener.release();
    }
    const pid = child.pid as number;
    const startTime = (await readProcStat(pid))?.startTime ?? 0;
    const state: StateFile = { id: spec.id, pid, startTime };
    await writeFile(join(spec.stateDir, STATE_FILE), JSON.stringify(state));

    const inst = new ProcessInstance(spec.id, pid, spec.stateDir);
    settleWith = (code, signal) => inst.settle(code ?? undefined, signal ?? undefined);
    if (earlyExit) settleWith(...earlyExit);
    detachers.set(spec.id, () => child.off('exit', onExit));
    track(inst);
    return inst;
  }

  function track(inst: ProcessInstance): void {
    live.set(inst.id, inst);
    void inst.exited.then(() => {
      live.delete(inst.id);
      detachers.delete(inst.id);
    });
  }

  async function recover(known: Array<{ id: string; stateDir: string }>): Promise<RecoveredInstance[]> {
    const out: RecoveredInstance[] = [];
    for (const { id, stateDir } of known) {
      const running = live.get(id);
      if (running) {
        out.push({ id, status: running.paused ? 'paused' : 'running', instance: running });
        continue;
      }
      const state = await readState(stateDir);
      const st = state ? await readProcStat(state.pid) : undefined;
      if (state && st && st.startTime === state.startTime && st.state !== 'Z' && st.state !== 'X') {
        const inst = new ProcessInstance(id, state.pid, stateDir);
        inst.paused = st.state === 'T';
        const stopWatch = watchExit(state.pid, state.startTime, () => inst.settle(undefined, undefined));
        detachers.set(id, stopWatch);
        track(inst);
        out.push({ id, status: inst.paused ? 'paused' : 'running', instance: inst });
      } else {
        if (state) sendSignal(-state.pid, 'SIGKILL');
        await rm(join(stateDir, STATE_FILE), { force: true });
        out.push({ id, status: 'stopped', instance: undefined });
      }
    }
    return out;
  }

  async function destroy(id: string, stateDir: string): Promise<void> {
    const inst = live.get(id);
    if (inst) {
      await inst.stop({ graceMs: 0 });
    } else {
      const state = await readState(stateDir);
      if (state && (await isAlive(state.pid, state.startTime))) {
        sendSignal(-state.pid, 'SIGKILL');
        for (let i = 0; i < 100 && (await isAlive(state.pid, state.startTime)); i++) await delay(20);
      }
    }
    await rm(join(stateDir, STATE_FILE), { force: true });
  }

  async function close(): Promise<void> {
    closed = true;
    for (const detach of detachers.values()) detach();
    detachers.clear();
    live.clear();
  }

  return { name: 'process', capabilities, fingerprint, start, recover, destroy, close } satisfies Driver;
}

class ProcessInstance implements PausableInstance {
  readonly id: string;
  readonly pid: number;
  readonly exited: Promise<InstanceExit>;
  paused = false;
  private readonly stateDir: string;
  private stopping = false;
  private done = false;
  private resolveExit!: (e: InstanceExit) => void;

  constructor(id: string, pid: number, stateDir: string) {
    this.id = id;
    this.pid = pid;
    this.stateDir = stateDir;
    this.exited = new Promise((r) => {
      this.resolveExit = r;
    });
  }

  /** Called once the leader has exited; code/signal undefined when unknown (re-attached). */
  settle(code: number | undefined, signal: string | undefined): void {
    if (this.done) return;
    this.done = true;
    // What the program left behind in its group goes with it.
    sendSignal(-this.pid, 'SIGKILL');
    const reason = this.stopping ? 'killed' : code === 0 ? 'exited' : 'crashed';
    void rm(join(this.stateDir, STATE_FILE), { force: true }).finally(() => {
      this.resolveExit({ reason, code, signal, at: Date.now() });
    });
  }

  async stop(options: { graceMs?: number } = {}): Promise<void> {
    if (this.done) {
      await this.exited;
      return;
    }
    this.stopping = true;
    const grace = options.graceMs ?? DEFAULT_GRACE_MS;
    if (grace > 0) {
      sendSignal(-this.pid, 'SIGTERM');
      // A stopped process keeps SIGTERM pending until it runs again.
      if (this.paused) sendSignal(-this.pid, 'SIGCONT');
      if ((await within(this.exited, grace)) !== undefined) return;
    }
    sendSignal(-this.pid, 'SIGKILL');
    await this.exited;
  }

  async pause(): Promise<void> {
    if (this.done) throw new ShoalError('conflict', `instance ${this.id} has exited`);
    sendSignal(-this.pid, 'SIGSTOP');
    this.paused = true;
  }

  async resume(): Promise<void> {
    if (this.done) throw new ShoalError('conflict', `instance ${this.id} has exited`);
    sendSignal(-this.pid, 'SIGCONT');
    this.paused = false;
  }

  async stats(): Promise<InstanceStats> {
    const st = await readProcStat(this.pid);
    if (!st) return { memoryBytes: undefined, cpuUsageNanos: undefined, pids: undefined };
    const rss = await readStatusField(this.pid, 'VmRSS'); // "12345 kB"
    const threads = await readStatusField(this.pid, 'Threads');
    return {
      memoryBytes: rss === undefined ? undefined : Number.parseInt(rss, 10) * 1024,
      cpuUsageNanos: (st.utimeTicks + st.stimeTicks) * NANOS_PER_TICK,
      pids: threads === undefined ? undefined : Number(threads),
    };
  }
}

function envObject(env: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of env) {
    const eq = entry.indexOf('=');
    if (eq <= 0) throw new ShoalError('invalid', `environment entry is not NAME=value: ${entry}`, { field: 'env' });
    out[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return out;
}

async function resolveProgram(rootfs: string, program: string, cwd: string, pathVar: string | undefined): Promise<string> {
  if (program.includes('/')) {
    return isAbsolute(program) ? join(rootfs, program) : join(rootfs, cwd, program);
  }
  for (const dir of (pathVar ?? '/usr/local/bin:/usr/bin:/bin').split(':')) {
    if (!dir) continue;
    const candidate = join(rootfs, dir, program);
    try {
      await access(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // next PATH entry
    }
  }
  throw new ShoalError('invalid', `program ${program} is not on the instance's PATH inside ${rootfs}`, { field: 'args[0]' });
}

async function hostPathIfInside(rootfs: string, arg: string): Promise<string> {
  if (!arg.startsWith('/')) return arg;
  try {
    await stat(join(rootfs, arg));
    return join(rootfs, arg);
  } catch {
    return arg;
  }
}

async function readState(stateDir: string): Promise<StateFile | undefined> {
  try {
    return JSON.parse(await readFile(join(stateDir, STATE_FILE), 'utf8')) as StateFile;
  } catch {
    return undefined;
  }
}
