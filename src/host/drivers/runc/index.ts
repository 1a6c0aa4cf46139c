// The `runc` driver: each instance is an OCI container run by runc, in new pid, mount,
// ipc, uts and network namespaces (only lo), with cgroup limits, no capabilities,
// no_new_privs and a seccomp allow-list, its root an overlay with a private upper dir.
//
// Two ways to launch, chosen once per driver (`mode`):
// - 'shim' (preferred): native/shim/shoal-shim.c makes itself a child subreaper, runs
//   `runc run -d` (start) or `runc create` (prepare), becomes the parent of the
//   container's init once runc returns, and reports the init's exit status. Exit codes
//   survive an agent restart (the shim also writes them to a file), the monitor costs
//   ~1 MB instead of a foreground runc's ~10 MB, and prepare() creates containers ahead
//   of time, so that start() is then only `runc start`.
//   prepareGeneric() creates one for a template before any service is chosen: its process
//   is native/runner/shoal-runner.c (executed from an inherited fd, so no file of ours is
//   in the root), which runs the program start() writes for it; graft() first mounts the
//   service's own layers inside the container's mount namespace (native/idmap/shoal-graft.c).
// - 'foreground': `runc run --keep` as the agent's child (its exit status is the
//   container's). Needs no compiler; a container killed by signal N shows as 128+N.
//
// Files per instance, all in <stateDir>/bundle: config.json, pid, exit (the shim's
// report), runc.log (runc's own JSON log: the reason when create fails).
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { constants, watch, type FSWatcher } from 'node:fs';
import { chmod, chown, mkdir, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { release } from 'node:os';
import { dirname, join, relative } from 'node:path';
import type { Readable } from 'node:stream';
import { ShoalError } from '../../../protocol/index.ts';
import type {
  DriverCapabilities,
  DriverFingerprint,
  IdMappedDriver,
  IdMapping,
  RootBoundingDriver,
  InstanceExit,
  InstanceSpec,
  InstanceStats,
  PausableInstance,
  PreparingDriver,
  RecoveredInstance,
} from '../driver.ts';
import { createInheritedListener, type InheritedListener } from '../shared/listener.ts';
import { delay, readProcStat, signalName, watchExit, within } from '../shared/proc.ts';
import { cgroupMode, cgroupPathsOf, readCgroupStats, readOomKills, type CgroupPaths } from './cgroups.ts';
import { createRuncCli, lastRuncError, type RuncCli } from './runc-cli.ts';
import { ensureGraftHelper, ensureRunner, ensureShim } from '../shared/native.ts';
import { lineReader, parseExitLine, readExitFile, readPidFile } from '../shared/shim-reports.ts';
import { portBridgeCopy } from '../shared/port-bridge.ts';
import type { SeccompArchitectures } from './seccomp.ts';
import { buildRuntimeSpec, hostBlockDeviceDirs, validateInstanceId } from './spec.ts';

export { ensurePortBridge, ensureShim } from '../shared/native.ts';
export { buildRuntimeSpec, cpuControls } from './spec.ts';
export { defaultSeccompProfile, type SeccompArchitectures } from './seccomp.ts';

export const capabilities = {
  isolation: 'namespaces',
  canPause: true,
  canSnapshot: false,
  canMigrate: false,
  canClone: false,
  enforcesLimits: true,
  servesPort: true,
} as const satisfies DriverCapabilities;

export interface RuncDriverOptions {
  /** runc's state dir (`runc --root`). Ours alone: recover() deletes containers it finds there that nobody claims. */
  runcRoot: string;
  /** The runc binary (default 'runc' on PATH). */
  runc?: string;
  /**
   * Instances go to the cgroup `<cgroupParent>/<id>`. A relative path lands under the
   * agent's own cgroup in each hierarchy (default 'shoal').
   */
  cgroupParent?: string;
  /** How start() launches runc (default 'auto': the shim when it builds, else foreground). */
  mode?: 'auto' | 'shim' | 'foreground';
  /** Where the compiled shim is cached (default $XDG_CACHE_HOME/shoal or ~/.cache/shoal). */
  shimDir?: string;
  /** Apply the seccomp profile (default true; turn off only to debug a program). */
  seccomp?: boolean;
  /** ABIs the seccomp filter admits: 'x86-family' (default) or 'native' (x86_64 only; ~17 ms faster create). */
  seccompArchitectures?: SeccompArchitectures;
  /** Size of each instance's /tmp (default 64 MiB). */
  tmpSizeBytes?: number;
  /** Size of each instance's /run/shoal (default 16 MiB). */
  runSizeBytes?: number;
  /**
   * The user namespace every instance runs in (one range per host; default
   * DEFAULT_ID_MAPPING), or false for none (root inside is then root outside).
   */
  userNamespace?: IdMapping | false;
  /**
   * An instance's log (stdout+stderr) is rotated to <logFile>.1 past this size, so it
   * never takes more than twice that (default 8 MiB). Shim mode only: in foreground mode
   * the container writes the file directly, unbounded.
   */
  logMaxBytes?: number;
  /** Let the agent bound each instance's root layer with a tmpfs of the plan's diskMb (default true). */
  boundedRoot?: boolean;
  log?: (message: string) => void;
}

type Mode = { kind: 'shim'; shim: string } | { kind: 'foreground' };

/**
 * One id range for all instances of a host, inside systemd's range for containers
 * (0x10000000..): root inside is uid 268435456 outside, an id no host user has. Per host
 * rather than per instance: instances are already kept apart by their namespaces and by
 * directories closed to each other, while one range lets every root share one view of
 * the layer cache and needs no range bookkeeping across restarts.
 */
export const DEFAULT_ID_MAPPING: IdMapping = { hostId: 0x10000000, count: 65536 };

const DEFAULT_GRACE_MS = 5000;
export const DEFAULT_LOG_MAX_BYTES = 8 * 1024 * 1024;
const CREATE_TIMEOUT_MS = 30_000;

function files(stateDir: string) {
  const bundle = join(stateDir, 'bundle');
  return {
    bundle,
    config: join(bundle, 'config.json'),
    pid: join(bundle, 'pid'),
    exit: join(bundle, 'exit'),
    runcLog: join(bundle, 'runc.log'),
    launch: join(bundle, 'launch'),
    /** A generic container's program (shoal-runner's fd 5), written at start. */
    program: join(bundle, 'program'),
  };
}

/** A service's layers added to a generic container: /<name> ← lowerDirs (top first), in one tmpfs of sizeBytes. */
export interface GraftLayers {
  /** A directory holding every lower dir (the layer cache's layers dir). */
  parent: string;
  mounts: Array<{ name: string; lowerDirs: string[] }>;
  sizeBytes: number;
}

/** A driver that pre-creates containers for a template and adds a service's layers at start. */
export interface GenericPreparingDriver extends PreparingDriver {
  /** graftParent: where graft()'s layers will be (a helper then waits for them, started ahead). */
  prepareGeneric(spec: InstanceSpec, options?: { graftParent?: string }): Promise<void>;
  graft(id: string, layers: GraftLayers): Promise<void>;
}

/** shoal-graft --wait, started with a generic container: the mounts are one line away. */
interface Grafter {
  parent: string;
  child: ChildProcess;
  lines: ReturnType<typeof lineReader>;
  stderr: () => string;
}

/** What a generic container is created with in place of the service's process. */
const GENERIC_PROCESS = { args: ['/proc/self/fd/4'], env: [] as string[], cwd: '/' };
const MOUNT_NAME = /^[\w.+-]{1,255}$/;
const LAYER_PATH = /^[^,:\\\n ]+$/;

export function createRuncDriver(options: RuncDriverOptions) {
  const runc = createRuncCli(options.runc ?? 'runc', options.runcRoot);
  const cgroupParent = (options.cgroupParent ?? 'shoal').replace(/\/+$/, '');
  const log = options.log ?? ((m: string) => console.warn(m));
  const live = new Map<string, RuncInstance>();
  const idMapping = options.userNamespace === false ? undefined : (options.userNamespace ?? DEFAULT_ID_MAPPING);
  const blockDeviceDirs = hostBlockDeviceDirs();
  /** Directories already checked to let the instances' root pass. */
  const passable = new Set<string>();
  /** Config of each created-but-not-started container, to check start() asks for the same. */
  const prepared = new Map<string, string>();
  /** Containers created with the runner (prepareGeneric): their config with GENERIC_PROCESS. */
  const generic = new Map<string, string>();
  const grafters = new Map<string, Grafter>();
  /** Lets a waiting helper go (end of input: it exits doing nothing). */
  const dropGrafter = (id: string): void => {
    const g = grafters.get(id);
    grafters.delete(id);
    g?.child.stdin?.end();
  };

  async function startGrafter(helper: string, pid: number, parent: string): Promise<Grafter | undefined> {
    const map = idMapping ? [String(idMapping.hostId), String(idMapping.count)] : ['-', '0'];
    const child = spawn(helper, ['--wait', String(pid), ...map, parent], { stdio: ['pipe', 'pipe', 'pipe'] });
    let err = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => void (err = (err + d).slice(-4096)));
    child.once('error', () => undefined);
    const lines = lineReader(child.stdout!);
    const first = await within(lines.next(), CREATE_TIMEOUT_MS);
    if (first !== 'ready') {
      child.kill('SIGKILL');
      log(`runc driver: the graft helper did not get ready (${err.trim() || first}); grafting will start it then`);
      return undefined;
    }
    return { parent, child, lines, stderr: () => err.trim() };
  }
  let closed = false;
  let modePromise: Promise<Mode> | undefined;

  function mode(): Promise<Mode> {
    modePromise ??= (async (): Promise<Mode> => {
      if (options.mode === 'foreground') return { kind: 'foreground' };
      try {
        return { kind: 'shim', shim: await ensureShim(options.shimDir ? { cacheDir: options.shimDir } : {}) };
      } catch (e) {
        if (options.mode === 'shim') throw e;
        log(`runc driver: ${(e as Error).message}; falling back to foreground \`runc run\` (slower start, no pre-created containers)`);
        return { kind: 'foreground' };
      }
    })();
    return modePromise;
  }

  /** The $PORT contract: the bridge's host path for the runtime spec (shared/port-bridge.ts). */
  async function portBridgeFor(spec: InstanceSpec): Promise<string | undefined> {
    return spec.tcpPort === undefined ? undefined : portBridgeCopy(spec.stateDir, options.shimDir);
  }

  function runtimeConfig(spec: InstanceSpec, portBridge: string | undefined): string {
    const config = buildRuntimeSpec(spec, {
      portBridge,
      cgroupsPath: `${cgroupParent}/${spec.id}`,
      seccomp: options.seccomp !== false,
      ...(options.seccompArchitectures ? { seccompArchitectures: options.seccompArchitectures } : {}),
      ...(options.tmpSizeBytes === undefined ? {} : { tmpSizeBytes: options.tmpSizeBytes }),
      ...(options.runSizeBytes === undefined ? {} : { runSizeBytes: options.runSizeBytes }),
      idMapping,
      extraMaskedPaths: blockDeviceDirs,
    });
    return JSON.stringify(config, null, 2);
  }

  /**
   * In a user namespace runc mounts the root as the instance's root (hostId), which must
   * be able to walk to it: the instance dir becomes root:hostId 0710 (no one else may
   * enter, list or write it), and its ancestors let others pass (o+x) without listing.
   */
  async function letRootPass(spec: InstanceSpec): Promise<void> {
    if (!idMapping) return;
    const instanceDir = dirname(spec.rootfs);
    const st = await stat(instanceDir);
    if (st.gid !== idMapping.hostId || (st.mode & 0o7777) !== 0o710) {
      await chown(instanceDir, st.uid, idMapping.hostId);
      await chmod(instanceDir, 0o710);
    }
    for (let d = dirname(instanceDir); d !== dirname(d) && !passable.has(d); d = dirname(d)) {
      const ds = await stat(d);
      if ((ds.mode & 0o001) === 0) {
        log(`runc driver: letting instances pass through ${d} (o+x), to reach their roots from their user namespace`);
        await chmod(d, (ds.mode & 0o7777) | 0o001);
      }
      passable.add(d);
    }
  }

  async function writeBundle(spec: InstanceSpec, config: string, launch: Mode['kind']): Promise<ReturnType<typeof files>> {
    const f = files(spec.stateDir);
    await rm(f.bundle, { recursive: true, force: true });
    await mkdir(f.bundle, { recursive: true });
    await writeFile(f.config, config);
    await writeFile(f.launch, launch);
    return f;
  }

  async function failCreate(spec: InstanceSpec, f: ReturnType<typeof files>, what: string, cause: unknown): Promise<never> {
    const reason = (await lastRuncError(f.runcLog)) ?? (cause instanceof Error ? cause.message : String(cause));
    await runc.delete(spec.id, { force: true }).catch(() => undefined);
    await rm(f.bundle, { recursive: true, force: true });
    // The program itself is missing or not executable: the spec is at fault, not the host.
    const badProgram = /exec: .*(no such file|permission denied|not found|exec format)/i.test(reason);
    throw new ShoalError(badProgram ? 'invalid' : 'internal', `${what} container ${spec.id} failed: ${reason}`, { field: badProgram ? 'args' : 'id', cause });
  }

  /**
   * Under the shim: `runc create` (the instance waits for `runc start`) or `runc run -d`
   * (create and start in one runc call: the fastest way when nothing was prepared).
   */
  async function launchWithShim(spec: InstanceSpec, config: string, shim: string, action: 'create' | 'run', runner?: string): Promise<RuncInstance> {
    const f = await writeBundle(spec, config, 'shim');
    let listener: InheritedListener;
    try {
      listener = await createInheritedListener(spec.listenSocket);
    } catch (e) {
      return failCreate(spec, f, 'creating the listener of', e);
    }
    const logHandle = await open(spec.logFile, 'a');
    // A generic container's runner gets itself (fd 4) and its program file (fd 5), empty
    // until start() writes it; host-owned, read through the descriptor only.
    const passed: Array<Awaited<ReturnType<typeof open>>> = [];
    let child: ChildProcess;
    try {
      if (runner) {
        await writeFile(f.program, '', { mode: 0o600 });
        passed.push(await open(runner, 'r'), await open(f.program, 'r'));
      }
      const runcArgs = [...runc.globalArgs(f.runcLog), ...(action === 'run' ? ['run', '--detach'] : ['create']), '--preserve-fds', String(1 + passed.length), '--bundle', f.bundle, '--pid-file', f.pid, spec.id];
      const logMax = String(options.logMaxBytes ?? DEFAULT_LOG_MAX_BYTES);
      const passArgs = passed.flatMap((_, i) => ['--pass-fd', String(5 + i)]);
      child = spawn(shim, ['--listen-fd', '4', ...passArgs, '--log', spec.logFile, logMax, f.exit, f.pid, runc.binary, ...runcArgs], {
        stdio: ['ignore', logHandle.fd, logHandle.fd, 'pipe', listener.fd, ...passed.map((h) => h.fd)],
        detached: true,
      });
      await new Promise<void>((resolve, reject) => {
        child.once('spawn', resolve);
        child.once('error', reject);
      });
    } catch (e) {
      await logHandle.close();
      for (const h of passed) await h.close();
      await listener.release();
      return failCreate(spec, f, 'starting the shim for', e);
    }
    await logHandle.close();
    for (const h of passed) await h.close();
    await listener.release();

    const pipe = child.stdio[3] as Readable;
    const lines = lineReader(pipe);
    let pid: number;
    try {
      const first = await within(lines.next(), CREATE_TIMEOUT_MS);
      if (first === undefined && child.exitCode === null) {
        child.kill('SIGKILL'); // it ignores TERM
        throw new Error(`runc create did not finish within ${CREATE_TIMEOUT_MS / 1000} s`);
      }
      const m = /^created (\d+)/.exec(first ?? '');
      if (!m) throw new Error(first ? `shim reported: ${first}` : 'the shim exited before runc create finished');
      pid = Number(m[1]);
    } catch (e) {
      return failCreate(spec, f, 'creating', e);
    }

    const inst = new RuncInstance(spec.id, pid, runc, log);
    inst.bundle = f.bundle;
    inst.started = action === 'run';
    inst.cgroups = await cgroupPathsOf(pid).catch(() => undefined);
    let reported = false;
    const onLine = (line: string): void => {
      const exit = parseExitLine(line);
      if (!exit) return;
      reported = true;
      void inst.onExit(exit.code, exit.signal);
    };
    lines.onLine(onLine);
    // The shim should always report; if it died instead, the init is an orphan of the
    // host's init and we can only watch it go.
    const onShimExit = (): void => {
      setTimeout(() => {
        if (reported || inst.done) return;
        void readExitFile(f.exit).then((exit) => {
          if (exit) void inst.onExit(exit.code, exit.signal);
          else inst.detach = watchExit(pid, undefined, () => void inst.onExit(undefined, undefined));
        });
      }, 50);
    };
    child.once('exit', onShimExit);
    inst.detach = () => {
      lines.close();
      child.off('exit', onShimExit);
      child.unref();
    };
    track(inst);
    return inst;
  }

  /** `runc run --keep` as our child; resolves once the container is running. */
  async function runForeground(spec: InstanceSpec, config: string): Promise<RuncInstance> {
    const f = await writeBundle(spec, config, 'foreground');
    let listener: InheritedListener;
    try {
      listener = await createInheritedListener(spec.listenSocket);
    } catch (e) {
      return failCreate(spec, f, 'creating the listener of', e);
    }
    const logHandle = await open(spec.logFile, 'a');
    let child: ChildProcess;
    try {
      child = spawn(
        runc.binary,
        [...runc.globalArgs(f.runcLog), 'run', '--keep', '--preserve-fds', '1', '--bundle', f.bundle, '--pid-file', f.pid, spec.id],
        { stdio: ['ignore', logHandle.fd, logHandle.fd, listener.fd], detached: true },
      );
      await new Promise<void>((resolve, reject) => {
        child.once('spawn', resolve);
        child.once('error', reject);
      });
    } catch (e) {
      await logHandle.close();
      await listener.release();
      return failCreate(spec, f, 'running', e);
    }
    await logHandle.close();
    await listener.release();
    let exitStatus: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let onExit: ((code: number | null, signal: NodeJS.Signals | null) => void) | undefined;
    child.once('exit', (code, signal) => {
      exitStatus = { code, signal };
      onExit?.(code, signal);
    });
    // runc writes the pid file once the container exists (just before starting it).
    let pid: number | undefined;
    for (let waited = 0; pid === undefined; waited += 5) {
      if (exitStatus) return failCreate(spec, f, 'running', new Error(`runc run exited with ${exitStatus.code ?? exitStatus.signal}`));
      if (waited > CREATE_TIMEOUT_MS) {
        child.kill('SIGKILL');
        return failCreate(spec, f, 'running', new Error(`runc run did not create the container within ${CREATE_TIMEOUT_MS / 1000} s`));
      }
      pid = await readPidFile(f.pid);
      if (pid === undefined) await delay(5);
    }
    const inst = new RuncInstance(spec.id, pid, runc, log);
    inst.bundle = f.bundle;
    inst.started = true;
    inst.cgroups = await cgroupPathsOf(pid).catch(() => undefined);
    onExit = (code, signal) => {
      // runc run exits with the container's status, 128+N when signal N killed it.
      if (code !== null && code > 128 && signalName(code - 128)) void inst.onExit(undefined, signalName(code - 128));
      else void inst.onExit(code ?? undefined, signal ?? undefined);
    };
    if (exitStatus) onExit(exitStatus.code, exitStatus.signal);
    inst.detach = () => {
      onExit = undefined;
      child.unref();
    };
    track(inst);
    return inst;
  }

  function track(inst: RuncInstance): void {
    live.set(inst.id, inst);
    void inst.exited.then(() => {
      if (live.get(inst.id) === inst) live.delete(inst.id);
      prepared.delete(inst.id);
      generic.delete(inst.id);
      dropGrafter(inst.id);
    });
  }

  async function startCreated(inst: RuncInstance): Promise<void> {
    try {
      if (!(await openExecFifo(join(runc.root, inst.id, EXEC_FIFO), () => inst.done))) await runc.start(inst.id);
      inst.started = true;
      prepared.delete(inst.id);
      generic.delete(inst.id);
    } catch (e) {
      await inst.stop({ graceMs: 0 }).catch(() => undefined);
      throw new ShoalError('internal', `runc start ${inst.id} failed: ${(e as Error).message}`, { field: 'id', cause: e });
    }
  }

  /**
   * A container for the template whose root `spec.rootfs` holds, with the runner as its
   * process: start() later runs spec's program (or another's with the same config but
   * for args, env and cwd), after graft() added the service's layers.
   */
  async function prepareGeneric(spec: InstanceSpec, opts: { graftParent?: string } = {}): Promise<void> {
    if (closed) throw new ShoalError('unavailable', 'the runc driver is closed');
    if (live.has(spec.id)) throw new ShoalError('conflict', `instance ${spec.id} already exists`, { field: 'id' });
    const config = runtimeConfig({ ...spec, ...GENERIC_PROCESS }, undefined);
    const m = await mode();
    if (m.kind !== 'shim') throw new ShoalError('unsupported', 'pre-creating containers needs the shim (no C compiler?)');
    // graft() needs its helper soon after: built now, off the deployment's path.
    const cache = options.shimDir ? { cacheDir: options.shimDir } : {};
    const [runner, helper] = await Promise.all([ensureRunner(cache), ensureGraftHelper(cache)]);
    await letRootPass(spec);
    const inst = await launchWithShim(spec, config, m.shim, 'create', runner);
    generic.set(spec.id, config);
    if (opts.graftParent !== undefined) {
      const g = await startGrafter(helper, inst.pid, opts.graftParent).catch(() => undefined);
      if (g && live.get(spec.id) === inst && !inst.started) grafters.set(spec.id, g);
      else g?.child.stdin?.end();
    }
  }

  /** Mounts a service's layers into a generic container not started yet (see GraftLayers). */
  async function graft(id: string, layers: GraftLayers): Promise<void> {
    const inst = live.get(id);
    if (!inst || inst.started || !generic.has(id)) throw new ShoalError('conflict', `instance ${id} is not a generic container waiting to start`, { field: 'id' });
    if (layers.mounts.length === 0) throw new ShoalError('invalid', 'nothing to graft', { field: 'mounts' });
    if (!Number.isSafeInteger(layers.sizeBytes) || layers.sizeBytes < 1024 * 1024) {
      throw new ShoalError('invalid', `the grafted layers' writable size must be at least 1 MiB, got ${layers.sizeBytes}`, { field: 'sizeBytes' });
    }
    const args: string[] = [];
    for (const { name, lowerDirs } of layers.mounts) {
      if (!MOUNT_NAME.test(name) || name === '.' || name === '..') throw new ShoalError('invalid', `mount name ${JSON.stringify(name)} is not one path component`, { field: 'mounts' });
      const rel = lowerDirs.map((d) => relative(layers.parent, d));
      if (rel.length === 0 || rel.some((r) => r === '' || r.startsWith('..') || !LAYER_PATH.test(r))) {
        throw new ShoalError('invalid', `the layers of /${name} must be under ${layers.parent}, with no , : or \\ in their paths`, { field: 'mounts' });
      }
      args.push(`${name}=${rel.join(':')}`);
    }
    const kib = String(Math.ceil(layers.sizeBytes / 1024));
    const waiting = grafters.get(id);
    grafters.delete(id);
    try {
      if (waiting && waiting.parent === layers.parent && waiting.child.exitCode === null) {
        const done = new Promise<number | null>((r) => waiting.child.once('exit', (code) => r(code)));
        waiting.child.stdin!.end(`${[kib, ...args].join(' ')}\n`);
        const reply = await within(waiting.lines.next(), CREATE_TIMEOUT_MS);
        const code = await done;
        if (reply !== 'ok' || code !== 0) throw Object.assign(new Error(`shoal-graft exited with ${code}`), { stderr: waiting.stderr() });
      } else {
        waiting?.child.stdin?.end();
        const helper = await ensureGraftHelper(options.shimDir ? { cacheDir: options.shimDir } : {});
        const map = idMapping ? [String(idMapping.hostId), String(idMapping.count)] : ['-', '0'];
        await runHelper(helper, [String(inst.pid), ...map, layers.parent, kib, ...args]);
      }
    } catch (e) {
      const stderr = (e as { stderr?: string }).stderr?.trim() || (e as Error).message;
      throw new ShoalError('internal', `adding the service's layers to ${id} failed: ${stderr}`, { field: 'id', cause: e });
    }
  }

  async function prepare(spec: InstanceSpec): Promise<void> {
    if (closed) throw new ShoalError('unavailable', 'the runc driver is closed');
    if (live.has(spec.id)) throw new ShoalError('conflict', `instance ${spec.id} already exists`, { field: 'id' });
    const config = runtimeConfig(spec, await portBridgeFor(spec));
    const m = await mode();
    if (m.kind !== 'shim') throw new ShoalError('unsupported', 'pre-creating containers needs the shim (no C compiler?)');
    await letRootPass(spec);
    await launchWithShim(spec, config, m.shim, 'create');
    prepared.set(spec.id, config);
  }

  async function start(spec: InstanceSpec): Promise<RuncInstance> {
    if (closed) throw new ShoalError('unavailable', 'the runc driver is closed');
    const config = runtimeConfig(spec, await portBridgeFor(spec));
    const existing = live.get(spec.id);
    if (existing) {
      if (existing.started) throw new ShoalError('conflict', `instance ${spec.id} is already running`, { field: 'id' });
      const genericConfig = generic.get(spec.id);
      if (genericConfig !== undefined) {
        // Its root may hold grafted layers a new container would not have: never re-created.
        if (genericConfig !== runtimeConfig({ ...spec, ...GENERIC_PROCESS }, undefined)) {
          await existing.stop({ graceMs: 0 });
          throw new ShoalError('internal', `generic container ${spec.id} was created for another config than this start asks for`, { field: 'id' });
        }
        const process = (JSON.parse(config) as { process: { args: string[]; env: string[]; cwd: string } }).process;
        const program = [process.cwd, String(process.args.length), ...process.args, ...process.env].map((x) => `${x}\0`).join('');
        await writeFile(files(spec.stateDir).program, program, { mode: 0o600 });
        await startCreated(existing);
        return existing;
      }
      if (prepared.get(spec.id) === config) {
        await startCreated(existing);
        return existing;
      }
      log(`runc driver: instance ${spec.id} was prepared with another spec; creating it anew`);
      await existing.stop({ graceMs: 0 });
    }
    const m = await mode();
    await letRootPass(spec);
    if (m.kind === 'foreground') return runForeground(spec, config);
    return launchWithShim(spec, config, m.shim, 'run');
  }

  async function recover(known: Array<{ id: string; stateDir: string }>): Promise<RecoveredInstance[]> {
    const containers = new Map((await runc.list()).map((c) => [c.id, c]));
    const out: RecoveredInstance[] = [];
    const claimed = new Set<string>();
    for (const { id, stateDir } of known) {
      claimed.add(id);
      const f = files(stateDir);
      const mine = live.get(id);
      if (mine?.started) {
        out.push({ id, status: mine.paused ? 'paused' : 'running', instance: mine });
        continue;
      }
      if (mine) {
        // Prepared by this very driver and not started yet: not running, but not ours to remove here.
        out.push({ id, status: 'stopped', instance: undefined });
        continue;
      }
      const c = containers.get(id);
      const st = c && c.pid > 0 ? await readProcStat(c.pid) : undefined;
      if (c && (c.status === 'running' || c.status === 'paused') && st && st.state !== 'Z') {
        const inst = await reattach(id, c.pid, st.startTime, f, c.status === 'paused');
        out.push({ id, status: c.status, instance: inst });
        continue;
      }
      // Stopped, only created (a pre-created container the old agent never started), or gone.
      if (c) await removeContainer(id);
      await rm(f.bundle, { recursive: true, force: true });
      out.push({ id, status: 'stopped', instance: undefined });
    }
    for (const id of containers.keys()) {
      if (claimed.has(id) || live.has(id)) continue;
      log(`runc driver: removing container ${id}, which no known instance claims`);
      await removeContainer(id);
    }
    return out;
  }

  async function reattach(id: string, pid: number, startTime: number, f: ReturnType<typeof files>, paused: boolean): Promise<RuncInstance> {
    const inst = new RuncInstance(id, pid, runc, log);
    inst.bundle = f.bundle;
    inst.started = true;
    inst.paused = paused;
    inst.cgroups = await cgroupPathsOf(pid).catch(() => undefined);
    const launch = await readFile(f.launch, 'utf8').catch(() => 'unknown');
    let watcher: FSWatcher | undefined;
    const gone = async (): Promise<void> => {
      stopPolling();
      watcher?.close();
      // The shim writes the status right after reaping the init: give it a moment.
      let exit = await readExitFile(f.exit);
      for (let i = 0; !exit && launch === 'shim' && i < 20; i++) {
        await delay(10);
        exit = await readExitFile(f.exit);
      }
      await inst.onExit(exit?.code, exit?.signal);
    };
    // Polling /proc notices within 250 ms; the exit file's appearance, at once.
    const stopPolling = watchExit(pid, startTime, () => void gone());
    try {
      watcher = watch(f.bundle, (_event, name) => {
        if (name === 'exit') void gone();
      });
    } catch {
      watcher = undefined;
    }
    inst.detach = () => {
      stopPolling();
      watcher?.close();
    };
    track(inst);
    return inst;
  }

  /** Kill, wait for the init to go, delete; without `delete --force`'s 100 ms sleep. */
  async function removeContainer(id: string): Promise<void> {
    const st = await runc.state(id);
    if (!st) return;
    if (st.status !== 'stopped') {
      if (st.status === 'paused') await runc.resume(id).catch(() => undefined);
      await runc.kill(id, 'KILL').catch(() => undefined);
      for (let i = 0; i < 200; i++) {
        const now = await runc.state(id);
        if (!now || now.status === 'stopped') break;
        await delay(10);
      }
    }
    try {
      await runc.delete(id);
    } catch {
      await runc.delete(id, { force: true });
    }
  }

  async function destroy(id: string, stateDir: string): Promise<void> {
    validateInstanceId(id);
    const inst = live.get(id);
    if (inst) await inst.stop({ graceMs: 0 });
    await removeContainer(id);
    prepared.delete(id);
    generic.delete(id);
    dropGrafter(id);
    await rm(files(stateDir).bundle, { recursive: true, force: true });
  }

  async function fingerprint(): Promise<DriverFingerprint> {
    const attributes: Record<string, string> = { isolation: 'namespaces', kernel: release() };
    const problems: string[] = [];
    try {
      attributes.runc = await runc.version();
    } catch {
      problems.push(`runc (${runc.binary}) not found`);
    }
    const root = process.getuid?.() === 0;
    attributes.root = String(root);
    if (!root) problems.push('not root');
    const cg = await cgroupMode();
    attributes.cgroups = cg;
    if (cg === 'none') problems.push('no cgroup hierarchy mounted');
    const actions = await readFile('/proc/sys/kernel/seccomp/actions_avail', 'utf8').catch(() => '');
    attributes.seccomp = actions.includes('errno') ? 'yes' : 'no';
    attributes.userns = idMapping ? `${idMapping.hostId}+${idMapping.count}` : 'off';
    if (options.seccomp !== false && attributes.seccomp === 'no') problems.push('the kernel has no seccomp filters');
    try {
      attributes.launch = (await mode()).kind;
    } catch (e) {
      problems.push((e as Error).message);
    }
    return {
      healthy: problems.length === 0,
      detail: problems.length === 0 ? `runc ${attributes.runc}, cgroups ${cg}, launch via ${attributes.launch}` : problems.join('; '),
      attributes,
    };
  }

  async function close(): Promise<void> {
    closed = true;
    for (const inst of [...live.values()]) {
      if (!inst.started) {
        // Pre-created containers are the driver's own: they go.
        await inst.stop({ graceMs: 0 }).catch(() => undefined);
        if (inst.bundle) await rm(inst.bundle, { recursive: true, force: true });
      } else {
        inst.detach();
      }
    }
    live.clear();
    prepared.clear();
    generic.clear();
    for (const id of [...grafters.keys()]) dropGrafter(id);
  }

  const driver = {
    name: 'runc',
    capabilities,
    fingerprint,
    prepare,
    prepareGeneric,
    graft,
    start,
    recover,
    destroy,
    close,
    ...(idMapping ? { idMapping } : {}),
    ...(options.boundedRoot === false ? {} : { boundsRoot: true as const }),
  } satisfies PreparingDriver & GenericPreparingDriver & Partial<IdMappedDriver & RootBoundingDriver>;
  return driver;
}

class RuncInstance implements PausableInstance {
  readonly id: string;
  readonly pid: number;
  readonly exited: Promise<InstanceExit>;
  cgroups: CgroupPaths | undefined;
  bundle: string | undefined;
  started = false;
  paused = false;
  done = false;
  /** Stops watching the instance (close(): it keeps running without us). */
  detach: () => void = () => undefined;
  private stopping = false;
  private readonly runc: RuncCli;
  private readonly log: (m: string) => void;
  private resolveExit!: (e: InstanceExit) => void;

  constructor(id: string, pid: number, runc: RuncCli, log: (m: string) => void) {
    this.id = id;
    this.pid = pid;
    this.runc = runc;
    this.log = log;
    this.exited = new Promise((r) => {
      this.resolveExit = r;
    });
  }

  /** The init has exited: read the OOM counter while the cgroup exists, delete, report. */
  async onExit(code: number | undefined, signal: string | undefined): Promise<void> {
    if (this.done) return;
    this.done = true;
    this.detach();
    const ooms = this.cgroups ? await readOomKills(this.cgroups) : undefined;
    const reason = this.stopping ? 'killed' : (ooms ?? 0) > 0 && code !== 0 ? 'oom' : code === 0 ? 'exited' : 'crashed';
    try {
      await this.runc.delete(this.id);
    } catch {
      await this.runc.delete(this.id, { force: true }).catch((e: unknown) => this.log(`runc driver: deleting ${this.id}: ${(e as Error).message}`));
    }
    this.resolveExit({ reason, code, signal, at: Date.now() });
  }

  async stop(options: { graceMs?: number } = {}): Promise<void> {
    if (this.done) {
      await this.exited;
      return;
    }
    this.stopping = true;
    const grace = this.started ? options.graceMs ?? DEFAULT_GRACE_MS : 0;
    if (grace > 0) {
      await this.runc.kill(this.id, 'TERM').catch(() => undefined);
      // A frozen process cannot act on the signal (nor, on cgroup v1, die of SIGKILL).
      if (this.paused) await this.resume().catch(() => undefined);
      if ((await within(this.exited, grace)) !== undefined) return;
    }
    if (this.paused) await this.resume().catch(() => undefined);
    await this.runc.kill(this.id, 'KILL').catch(() => undefined);
    // Note: pid 1 of a pid namespace ignores signals it has no handler for, but not
    // SIGKILL sent from outside; so this always ends it.
    await this.exited;
  }

  async pause(): Promise<void> {
    if (!this.started || this.done) throw new ShoalError('conflict', `instance ${this.id} is not running`);
    await this.runc.pause(this.id);
    this.paused = true;
  }

  async resume(): Promise<void> {
    if (!this.started || this.done) throw new ShoalError('conflict', `instance ${this.id} is not running`);
    await this.runc.resume(this.id);
    this.paused = false;
  }

  async stats(): Promise<InstanceStats> {
    if (!this.cgroups || this.done) return { memoryBytes: undefined, cpuUsageNanos: undefined, pids: undefined };
    return readCgroupStats(this.cgroups);
  }
}

/** What runc's init of a created container waits on; in runc's own state dir (ours, never the instance's). */
const EXEC_FIFO = 'exec.fifo';
const FIFO_TIMEOUT_MS = 10_000;

/**
 * What `runc start` does, without starting runc (a Go program: tens of ms, more under
 * load): open the created container's exec fifo, which lets its init go on to exec the
 * process, read its byte until the init's exec closes it, remove the fifo (runc then
 * reports the container as running). False when there is no fifo (`runc start` does it).
 */
async function openExecFifo(fifo: string, gone: () => boolean): Promise<boolean> {
  let fh: Awaited<ReturnType<typeof open>>;
  try {
    fh = await open(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
  try {
    const buf = Buffer.alloc(16);
    let got = 0;
    for (const deadline = performance.now() + FIFO_TIMEOUT_MS; ; ) {
      let n = -1;
      try {
        n = (await fh.read(buf, 0, buf.length, null)).bytesRead;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      }
      if (n > 0) got += n;
      else if (n === 0 && got > 0) break; // its exec closed the fifo: started
      else {
        // Nothing yet (EAGAIN), or no writer yet (0): the init may not have reached the fifo.
        if (gone()) throw new Error("the container's init went before it was started");
        if (performance.now() > deadline) throw new Error(`the container's init did not go on within ${FIFO_TIMEOUT_MS / 1000} s`);
        await delay(1);
      }
    }
  } finally {
    await fh.close();
  }
  await rm(fifo, { force: true });
  return true;
}

function runHelper(file: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(file, args, (err, _stdout, stderr) => (err ? reject(Object.assign(err, { stderr })) : resolve()));
  });
}

