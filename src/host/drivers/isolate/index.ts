// The `isolate` driver: a shoal/service program (the same bundle that runs under runc)
// runs in a V8 isolate (isolated-vm) with a heap limit and a CPU-time budget per message.
// Isolates never run in the agent: they live in runner processes (runner.ts) started by
// the shared launcher (../runner/), confined as runc containers (fallback: plain child
// processes where runc is missing, said in the fingerprint).
//
// One runner per service version (the bundle's content digest), many isolates per runner.
// Why not per tenant: the driver is not told tenants, and one version's isolates run the
// same code, so an escape from an isolate reaches only copies of the code it already is
// (with their data: a shared runner is that version's trust domain). The runner's own
// confinement bounds what an escape reaches beyond that.
//
// The instance contract is kept: the host makes each instance's listening socket and hands
// it to the runner over the IPC channel; the runner answers HTTP on it. An instance's
// imports are reached through the host: the isolate names an import, the driver connects
// to <importsDir>/<name>.sock (a host-owned directory) and relays the call.
//
// Live state: none (canSnapshot/canMigrate/canClone false). isolated-vm cannot capture a
// running isolate's heap: Isolate.createSnapshot only runs scripts into a fresh heap, and
// its README warns against using it; a handler's closures and pending promises cannot be
// serialised from outside. See docs/components.md.
import { lstat, mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ShoalError } from '../../../protocol/index.ts';
import type { Driver, DriverCapabilities, DriverFingerprint, InstanceExit, InstanceResources, InstanceSpec, InstanceStats, RecoveredInstance, RunningInstance } from '../driver.ts';
import { createRunnerChannel, deleteRunc, launchRunner, nodeBinary, type Confinement, type RunnerChannel, type RunnerProcess } from '../runner/index.ts';
import { openCappedLog, type CappedLog } from '../shared/capped-log.ts';
import { createInheritedListener } from '../shared/listener.ts';
import { createBundleCache, MODULE_FILE } from '../shared/bundle.ts';
import { createImportRelay, type ImportRelayLimits } from './import-relay.ts';
import type { ExitMessage } from './messages.ts';

export const capabilities = {
  isolation: 'isolate',
  canPause: false,
  canSnapshot: false,
  canMigrate: false,
  canClone: false,
  enforcesLimits: true,
} as const satisfies DriverCapabilities;

export interface IsolateDriverOptions {
  /** Where runners keep their scratch dirs and logs. */
  dataDir: string;
  /** 'auto' (default): runc when root with runc on PATH, else plain child processes. */
  confinement?: 'auto' | Confinement;
  /** CPU time one message or timer callback may take before the instance is ended (default 5000 ms). */
  messageCpuMs?: number;
  /** Limits of one runner, all its isolates together (default 4 GiB, 2 cores, 256 pids). */
  runnerResources?: InstanceResources;
  /** How long a runner with no instance left stays up for the next start (default 60 s). */
  runnerIdleMs?: number;
  /** cgroup parent of the runners (default shoal). */
  cgroupParent?: string;
  log?: (message: string) => void;
  /** Cap of one instance's log file before it rotates to .1 (default 8 MiB, as runc's shim). */
  logMaxBytes?: number;
  /** Bounds of import calls relayed for isolates (reply size, time, calls in flight per instance). */
  importLimits?: ImportRelayLimits;
}

const RUNNER_DIR = fileURLToPath(new URL('.', import.meta.url));
const RUNNER_INSIDE = '/shoal/runner/isolate';
const require = createRequire(import.meta.url);
const IVM_DIR = dirname(require.resolve('isolated-vm'));
/** isolated-vm finds its prebuilt binary with node-gyp-build. */
const GYP_BUILD_DIR = dirname(createRequire(require.resolve('isolated-vm')).resolve('node-gyp-build/package.json'));
const IMPORT_NAME = /^[A-Za-z0-9_-]{1,64}$/;
/** isolated-vm refuses smaller heaps. */
const MIN_HEAP_MB = 8;

interface Runner {
  key: string;
  proc: RunnerProcess;
  channel: RunnerChannel;
  instances: Map<string, IsolateInstance>;
  /** The runner holds the bundle (sent once, with its first start). */
  hasModules: boolean;
  idleTimer: NodeJS.Timeout | undefined;
}

export function createIsolateDriver(options: IsolateDriverOptions) {
  const log = options.log ?? ((m: string) => console.warn(m));
  const base = join(options.dataDir, 'isolate');
  const runcRoot = join(base, 'runc');
  const messageCpuMs = options.messageCpuMs ?? 5000;
  const idleMs = options.runnerIdleMs ?? 60_000;
  const runnerResources = options.runnerResources ?? { memoryBytes: 4 * 1024 ** 3, cpuMillis: 2000, pids: 256 };
  const cgroupParent = (options.cgroupParent ?? 'shoal').replace(/\/+$/, '');
  const runners = new Map<string, Promise<Runner>>();
  const live = new Map<string, IsolateInstance>();
  let closed = false;
  let confinementPromise: Promise<Confinement> | undefined;
  const importRelay = createImportRelay(options.importLimits);

  function confinement(): Promise<Confinement> {
    confinementPromise ??= (async () => {
      const asked = options.confinement ?? 'auto';
      if (asked !== 'auto') return asked;
      return process.getuid?.() === 0 && (await onPath('runc')) ? 'runc' : 'process';
    })();
    return confinementPromise;
  }

  async function fingerprint(): Promise<DriverFingerprint> {
    const c = await confinement();
    return {
      healthy: true,
      detail:
        c === 'runc'
          ? 'runs shoal/service bundles in V8 isolates (isolated-vm), in runner processes confined as runc containers'
          : 'runs shoal/service bundles in V8 isolates (isolated-vm), in runner processes that are plain child processes: NOT confined (no runc, or not root)',
      attributes: { isolation: 'isolate', runner: c, node: process.versions.node, v8: process.versions.v8 },
    };
  }

  async function runnerFor(key: string): Promise<Runner> {
    let r = runners.get(key);
    if (r === undefined) {
      r = startRunner(key);
      runners.set(key, r);
      r.catch(() => runners.delete(key));
    }
    return r;
  }

  async function startRunner(key: string): Promise<Runner> {
    const c = await confinement();
    const id = `shoal-iso-${key}-${process.pid}`;
    const stateDir = join(base, 'runners', id);
    await mkdir(stateDir, { recursive: true, mode: 0o700 });
    if (c === 'runc') await mkdir(runcRoot, { recursive: true, mode: 0o700 });
    const proc = await launchRunner({
      id,
      confinement: c,
      args: [nodeBinary(c), '--no-node-snapshot', '--disable-warning=ExperimentalWarning', `${RUNNER_INSIDE}/runner.ts`],
      env: [`PATH=${dirname(nodeBinary(c))}`],
      binds: [
        { source: RUNNER_DIR, destination: RUNNER_INSIDE },
        { source: IVM_DIR, destination: '/shoal/runner/node_modules/isolated-vm' },
        { source: GYP_BUILD_DIR, destination: '/shoal/runner/node_modules/node-gyp-build' },
      ],
      resources: runnerResources,
      logFile: join(stateDir, 'log'),
      stateDir,
      runcRoot,
      cgroupsPath: `${cgroupParent}/${id}`,
    });
    let readyResolve!: () => void;
    const ready = new Promise<void>((resolve) => (readyResolve = resolve));
    const runner: Runner = { key, proc, channel: undefined as unknown as RunnerChannel, instances: new Map(), hasModules: false, idleTimer: undefined };
    runner.channel = createRunnerChannel(proc.child, (m) => {
      if (m.t === 'ready') return readyResolve();
      const inst = typeof m.id === 'string' ? runner.instances.get(m.id) : undefined;
      if (m.t === 'log' && inst) inst.writeLog(String(m.text));
      else if (m.t === 'exit' && inst) inst.settle(m as unknown as ExitMessage);
      else if (m.t === 'import') void relayImport(runner, m as unknown as ImportRequest);
    });
    void proc.exited.then(({ code, signal }) => {
      runners.delete(key);
      clearTimeout(runner.idleTimer);
      for (const inst of runner.instances.values()) {
        inst.settle({ t: 'exit', id: inst.id, reason: 'crashed', message: `its runner ${id} ended (code ${code}, signal ${signal}); see ${join(stateDir, 'log')}` });
      }
      void rm(stateDir, { recursive: true, force: true });
    });
    const started = await Promise.race([ready.then(() => true), proc.exited.then(() => false), delayed(30_000).then(() => false)]);
    if (!started) {
      const tail = await readFile(join(stateDir, 'log'), 'utf8').catch(() => '');
      await proc.kill();
      throw new ShoalError('unavailable', `isolate runner ${id} did not start: ${tail.slice(-2000)}`);
    }
    return runner;
  }

  function forget(runner: Runner, inst: IsolateInstance): void {
    runner.instances.delete(inst.id);
    live.delete(inst.id);
    if (runner.instances.size === 0 && !closed) {
      clearTimeout(runner.idleTimer);
      runner.idleTimer = setTimeout(() => {
        if (runner.instances.size > 0) return;
        runners.delete(runner.key);
        void runner.proc.kill();
      }, idleMs);
      runner.idleTimer.unref();
    }
  }

  interface ImportRequest {
    seq: number;
    id: string;
    name: string;
    op: string;
    body: string;
  }

  /** One import call of an isolate, relayed to <importsDir>/<name>.sock (host-owned). */
  async function relayImport(runner: Runner, m: ImportRequest): Promise<void> {
    const inst = runner.instances.get(m.id);
    const answer = (status: number, text: string): void => runner.channel.post({ t: 'import-reply', seq: m.seq, status, text });
    const refuse = (message: string): void => answer(503, JSON.stringify({ error: { code: 'unavailable', message } }));
    if (inst === undefined) return refuse(`instance ${m.id} is not running`);
    if (!IMPORT_NAME.test(m.name) || !/^[A-Za-z0-9_]{1,128}$/.test(m.op)) return refuse(`import ${m.name}.${m.op} is not a valid name`);
    const socketPath = join(inst.importsDir, `${m.name}.sock`);
    const st = await lstat(socketPath).catch(() => undefined);
    if (!st?.isSocket()) return refuse(`import ${m.name} is not declared for this instance`);
    const reply = await importRelay.call(inst.id, socketPath, m.name, m.op, m.body);
    answer(reply.status, reply.text);
  }

  async function start(spec: InstanceSpec): Promise<RunningInstance> {
    if (closed) throw new ShoalError('unavailable', 'the isolate driver is closed');
    if (live.has(spec.id)) throw new ShoalError('conflict', `instance ${spec.id} is already running`, { field: 'id' });
    const entry = spec.args.find((a) => a.startsWith('/') && MODULE_FILE.test(a));
    if (entry === undefined) throw new ShoalError('invalid', `spec.args names no module to run (an absolute .mjs/.js path in the image): ${JSON.stringify(spec.args)}`, { field: 'args' });
    const { modules, key } = await bundleOf(spec.rootfs, entry);
    const runner = await runnerFor(key);
    clearTimeout(runner.idleTimer);
    await mkdir(spec.stateDir, { recursive: true });
    const inst = new IsolateInstance(spec, runner, options.logMaxBytes);
    live.set(spec.id, inst);
    runner.instances.set(spec.id, inst);
    void inst.exited.then(() => forget(runner, inst));
    const env = Object.fromEntries(spec.env.filter((kv) => kv.includes('=')).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
    env.HOSTNAME ??= spec.id.slice(0, 63);
    const listener = await createInheritedListener(spec.listenSocket);
    try {
      const reply = await runner.channel.request(
        {
          t: 'start',
          id: spec.id,
          entry,
          ...(runner.hasModules ? {} : { modules }),
          env,
          memoryMb: Math.max(MIN_HEAP_MB, Math.floor(spec.resources.memoryBytes / (1024 * 1024))),
          messageCpuMs,
        },
        listener.server,
      );
      runner.hasModules = true;
      // A program that fails while starting is a crash of the instance, as with the other drivers.
      if (!reply.ok) inst.settle({ t: 'exit', id: spec.id, reason: 'crashed', code: 1, message: `starting ${entry} failed: ${reply.message}` });
    } catch (e) {
      inst.settle({ t: 'exit', id: spec.id, reason: 'crashed', message: (e as Error).message });
    } finally {
      await listener.release();
    }
    return inst;
  }

  const bundles = createBundleCache();
  /** The bundle and the version key its runner is named by. */
  async function bundleOf(rootfs: string, entry: string): Promise<{ modules: Record<string, string>; key: string }> {
    const { modules, digest } = await bundles.read(rootfs, entry);
    return { modules, key: digest.slice(0, 16) };
  }

  async function recover(known: Array<{ id: string; stateDir: string }>): Promise<RecoveredInstance[]> {
    // Runners end with the agent that started them (their IPC channel closes), so after
    // a restart there is nothing to re-attach; runc containers left behind are removed.
    if ((await confinement()) === 'runc') {
      const left = await readdir(join(runcRoot)).catch(() => [] as string[]);
      for (const id of left) if (id.startsWith('shoal-iso-') && ![...runners.keys()].some((k) => id.startsWith(`shoal-iso-${k}-${process.pid}`))) await deleteRunc(runcRoot, id);
    }
    return known.map(({ id }) => {
      const inst = live.get(id);
      return inst ? { id, status: 'running' as const, instance: inst } : { id, status: 'stopped' as const, instance: undefined };
    });
  }

  async function destroy(id: string, stateDir: string): Promise<void> {
    await live.get(id)?.stop({ graceMs: 0 });
    void stateDir; // the driver keeps nothing of an instance on disk
  }

  async function close(): Promise<void> {
    // Runners cannot outlive the driver's channel to them: closing ends their instances.
    closed = true;
    const all = await Promise.allSettled([...runners.values()]);
    runners.clear();
    await Promise.all(
      all.map(async (r) => {
        if (r.status !== 'fulfilled') return;
        clearTimeout(r.value.idleTimer);
        await r.value.proc.kill();
      }),
    );
  }

  return { name: 'isolate', capabilities, fingerprint, start, recover, destroy, close } satisfies Driver;
}

class IsolateInstance implements RunningInstance {
  readonly id: string;
  readonly exited: Promise<InstanceExit>;
  readonly importsDir: string;
  private readonly runner: Runner;
  private resolveExit!: (e: InstanceExit) => void;
  private done = false;
  /** Capped like runc's shim: an isolate's console output must not fill the disk or queue in the agent. */
  private readonly log: CappedLog;

  constructor(spec: InstanceSpec, runner: Runner, logMaxBytes: number | undefined) {
    this.id = spec.id;
    this.importsDir = spec.importsDir;
    this.log = openCappedLog(spec.logFile, logMaxBytes === undefined ? {} : { maxBytes: logMaxBytes });
    this.runner = runner;
    this.exited = new Promise((r) => (this.resolveExit = r));
  }

  get pid(): number | undefined {
    return this.runner.proc.child.pid;
  }

  writeLog(text: string): void {
    this.log.write(text);
  }

  settle(m: ExitMessage): void {
    if (this.done) return;
    this.done = true;
    if (m.message) this.writeLog(`[shoal isolate] ${m.reason}: ${m.message}\n`);
    void this.log.close().then(() => this.resolveExit({ reason: m.reason, code: m.code, signal: m.signal, at: Date.now() }));
  }

  async stop(options: { graceMs?: number } = {}): Promise<void> {
    if (!this.done) {
      await this.runner.channel.request({ t: 'stop', id: this.id, graceMs: options.graceMs ?? 5000 }).catch(() => undefined);
      // The runner reports the exit before its reply; if it is gone, so is the instance.
      if (!this.done) this.settle({ t: 'exit', id: this.id, reason: 'killed' });
    }
    await this.exited;
  }

  async stats(): Promise<InstanceStats> {
    const r = await this.runner.channel.request({ t: 'stats', id: this.id }).catch(() => undefined);
    if (!r?.ok) return { memoryBytes: undefined, cpuUsageNanos: undefined, pids: undefined };
    // An isolate is a heap in a shared process: no processes of its own, counted as one.
    return { memoryBytes: r.memoryBytes as number, cpuUsageNanos: r.cpuNanos as number, pids: 1 };
  }
}

/** The service version a runner holds: the digest of the entry's name and every module file. */
async function onPath(name: string): Promise<boolean> {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir && (await lstat(join(dir, name)).catch(() => undefined))) return true;
  }
  return false;
}

function delayed(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
