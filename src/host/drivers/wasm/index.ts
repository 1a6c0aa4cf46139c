// The `wasm` driver: runs WASI modules that follow Shoal's component ABI
// (docs/components.md), one runner process per instance (runner.ts, started by
// launcher.ts), and captures, restores and forks their running state (linear memory and
// exported globals; engine.ts).
//
// How a spec maps onto a component:
// - args[0] is the module's path inside spec.rootfs (the component image's entry, also in
//   its config label dev.shoal.entry); the host reads it (never following a link out of
//   the root) and hands the bytes to the runner, which compiles them.
// - The listening socket is made by the host at spec.listenSocket and handed to the
//   runner over its IPC channel; the runner serves HTTP on it.
// - spec.resources.memoryBytes bounds linear memory; a call running past callTimeoutMs
//   ends the instance (reason 'killed').
// - The module sees no file system and no network, the spec's environment (WASI environ); its fd 1
//   and 2 go to spec.logFile.
// - Spare runners (two) are started ahead so that a start only sends the module (warm host).
import { createHash, randomBytes } from 'node:crypto';
import { access, constants as fsConstants, mkdir, open, readFile, realpath, writeFile } from 'node:fs/promises';
import { dirname, join, sep } from 'node:path';
import { release } from 'node:os';
import { isBuiltin } from 'node:module';
import { ShoalError } from '../../../protocol/index.ts';
import type {
  CapturedState,
  CapturingInstance,
  Driver,
  DriverCapabilities,
  DriverFingerprint,
  ForkingDriver,
  InstanceExit,
  InstanceSpec,
  InstanceStats,
  RecoveredInstance,
  RestoringDriver,
  RunningInstance,
} from '../driver.ts';
import { openCappedLog } from '../shared/capped-log.ts';
import { createInheritedListener } from '../shared/listener.ts';
import { findOnPath, NANOS_PER_TICK, readProcStat, readStatusField, within } from '../shared/proc.ts';
import { describeConfinement, launchRunner, RUNNER_SCRIPT, type Confinement, type Runner } from './launcher.ts';
import { QUICKJS_WASM, quickjsNodeModules, runnerFilesFor } from './runner-files.ts';
import { createBundleCache, MODULE_FILE } from '../shared/bundle.ts';
import { builtinShim, SDK_INDEX } from '../isolate/isolate-sdk.ts';
import type { JsBundle } from './quickjs-engine.ts';
import type { HostToRunner, RunnerToHost } from './runner-protocol.ts';
import { STATE_MEDIA_TYPE, WASM_PAGE } from './engine.ts';

export { STATE_MEDIA_TYPE } from './engine.ts';

export const capabilities = {
  isolation: 'wasm',
  canPause: false,
  canSnapshot: true,
  // Capture here, restore on another host; the provider moves the route (src/provider/migration.ts).
  canMigrate: true,
  canClone: true,
  // Linear memory and call time are bounded; the plan's CPU share and pids are not.
  enforcesLimits: false,
} as const satisfies DriverCapabilities;

export const ANNOTATION = {
  driver: 'dev.shoal.driver',
  module: 'dev.shoal.wasm.module',
  memoryBytes: 'dev.shoal.state.memory-bytes',
  pages: 'dev.shoal.state.pages',
} as const;

export interface WasmDriverOptions {
  log?: (message: string) => void;
  /** Longest one call may run before the instance is ended ('killed'). Default 10 s; 0: none. */
  callTimeoutMs?: number;
  /** Keep runners started ahead (two; default true). */
  spare?: boolean;
  /** Run runners in namespaces as uid 65534 when root (default true). */
  namespaces?: boolean;
}

const DEFAULT_CALL_TIMEOUT_MS = 10_000;
const DEFAULT_GRACE_MS = 2000;
const START_TIMEOUT_MS = 30_000;
const SPARE_DELAY_MS = 200;
/** Runners kept started ahead, per driver. */
const SPARES = 2;
/** Preludes kept (each a few MiB: the non-zero pages of QuickJS's heap after the libraries ran). */
const MAX_PRELUDES = 8;
/** A captured state beyond its linear memory: globals, the page index, WASI and framing. */
const STATE_OVERHEAD_BYTES = 16 * 1024 * 1024;

export function createWasmDriver(options: WasmDriverOptions = {}) {
  const callTimeoutMs = options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
  const useSpare = options.spare ?? true;
  const live = new Map<string, WasmInstance>();
  let confinement: Promise<Confinement> | undefined;
  /** Runners started ahead (all for one memory size: the last one asked for), up to SPARES. */
  let spares: Runner[] = [];
  const loaded = new WeakSet<Runner>();
  let closed = false;
  /** This driver has run a JS bundle: its spares warm QuickJS up too. */
  let runsJs = false;

  const confine = (): Promise<Confinement> =>
    (confinement ??= (async () => {
      if (options.namespaces === false || process.getuid?.() !== 0) return { namespaces: undefined };
      const [unshare, setpriv] = await Promise.all([findOnPath('unshare'), findOnPath('setpriv')]);
      if (!unshare || !setpriv) return { namespaces: undefined };
      // As uid 65534 the runner must reach its code and Node: copied out of a 0700 checkout.
      return { namespaces: { unshare, setpriv }, files: await runnerFilesFor(dirname(RUNNER_SCRIPT), process.execPath) };
    })());

  const alive = (r: Runner): boolean => r.child.exitCode === null && r.child.signalCode === null;

  /** Keeps only live spares of `pages`; the others are ended. */
  function pruneSpares(pages: number): void {
    for (const r of spares) if (r.maxMemoryPages !== pages && alive(r)) r.child.kill('SIGKILL');
    spares = spares.filter((r) => r.maxMemoryPages === pages && alive(r));
  }

  async function takeRunner(maxMemoryPages: number): Promise<Runner> {
    pruneSpares(maxMemoryPages);
    // A loaded spare first; one still loading is still ahead of a new process.
    const i = Math.max(spares.findIndex((r) => loaded.has(r)), 0);
    const hit = spares.splice(i, 1)[0];
    if (hit) return hit;
    return launchRunner({ maxMemoryPages, confinement: await confine() });
  }

  /**
   * Starts spares up to SPARES, one at a time (each start is a burst of CPU): two, so that
   * starts in quick succession on one host (a restore right after a suspend, a burst of
   * cold starts) each find one loaded.
   */
  function refill(maxMemoryPages: number): void {
    if (!useSpare || closed) return;
    pruneSpares(maxMemoryPages);
    if (spares.length >= SPARES || spares.some((r) => !loaded.has(r))) return;
    void confine().then((c) => {
      if (closed || spares.length >= SPARES || spares.some((r) => !loaded.has(r))) return;
      const r = launchRunner({ maxMemoryPages, confinement: c, spare: true, warmQuickJs: runsJs });
      r.child.unref();
      spares.push(r);
      r.spawned.then(
        () => {
          loaded.add(r);
          refill(maxMemoryPages);
        },
        () => undefined,
      );
    });
  }

  async function fingerprint(): Promise<DriverFingerprint> {
    const c = await confine();
    return {
      healthy: typeof WebAssembly === 'object',
      detail: `runs WASI components (node:wasi, V8 ${process.versions.v8}); ${describeConfinement(c)}`,
      attributes: { isolation: 'wasm', runner: c.namespaces ? 'namespaces' : 'process', runc: 'false', kernel: release() },
    };
  }

  /** Start a runner for spec with `state` (restore/fork) or fresh. */
  async function launch(spec: InstanceSpec, program: Program, state?: { bytes: Uint8Array; compressed: boolean }): Promise<WasmInstance> {
    if (closed) throw new ShoalError('unavailable', 'the wasm driver is closed');
    if (live.has(spec.id)) throw new ShoalError('conflict', `instance ${spec.id} is already running`, { field: 'id' });
    const maxMemoryPages = Math.max(1, Math.floor(spec.resources.memoryBytes / WASM_PAGE));
    await mkdir(spec.stateDir, { recursive: true });
    const runner = await takeRunner(maxMemoryPages);
    if (program.bundle) runsJs = true;
    const inst = new WasmInstance(spec.id, runner, program);
    const prelude = program.bundle && !state ? preludes.get(program.digest) : undefined;
    // Capped like runc's shim: the instance writes this, the agent's disk and memory hold it.
    const log = openCappedLog(spec.logFile);
    if (runner.child.stdout) log.attach(runner.child.stdout);
    if (runner.child.stderr) log.attach(runner.child.stderr);
    runner.child.once('close', () => void log.close());
    live.set(spec.id, inst);
    void inst.exited.then(() => live.delete(spec.id));
    const listener = await createInheritedListener(spec.listenSocket);
    try {
      await runner.spawned;
      const message: HostToRunner = {
        type: 'start',
        seq: 0,
        module: program.module,
        ...(program.bundle ? { bundle: program.bundle } : {}),
        ...(prelude ? { prelude } : {}),
        maxMemoryBytes: maxMemoryPages * WASM_PAGE,
        cpuLimitMs: callTimeoutMs,
        env: envOf(spec.env),
        ...(state ? { state: state.bytes, stateCompressed: state.compressed } : {}),
      };
      const started = inst.request(message, listener.server);
      void started.then((answer) => {
        if (answer.type === 'ready' && answer.prelude) keepPrelude(program.digest, answer.prelude);
      }, () => undefined);
      await Promise.race([
        started,
        inst.exited.then((e) => {
          throw new Error(`the runner exited while starting (${e.reason}, code ${e.code}, signal ${e.signal})`);
        }),
        new Promise((_, reject) => setTimeout(() => reject(new Error('the runner did not start in time')), START_TIMEOUT_MS).unref()),
      ]);
    } catch (e) {
      runner.child.kill('SIGKILL');
      throw new ShoalError('invalid', `starting wasm instance ${spec.id} failed: ${(e as Error).message}`, { field: 'image', cause: e });
    } finally {
      await listener.release();
      // The next spare, a little after this start: a spawn stalls this process's event loop
      // (tens of ms here), which would delay the new instance's readiness and first messages.
      setTimeout(() => refill(maxMemoryPages), SPARE_DELAY_MS).unref();
    }
    return inst;
  }

  /** A JS bundle's libraries, evaluated (its runners' starts restore this instead), by program digest; the newest few. */
  const preludes = new Map<string, Uint8Array>();
  function keepPrelude(digest: string, bytes: Uint8Array): void {
    preludes.delete(digest);
    preludes.set(digest, bytes);
    while (preludes.size > MAX_PRELUDES) preludes.delete(preludes.keys().next().value as string);
  }

  async function start(spec: InstanceSpec): Promise<WasmInstance> {
    return launch(spec, await readProgram(spec));
  }

  async function restore(spec: InstanceSpec, state: CapturedState): Promise<WasmInstance> {
    if (state.mediaType !== STATE_MEDIA_TYPE) throw new ShoalError('unsupported', `the wasm driver restores ${STATE_MEDIA_TYPE} states, not ${state.mediaType}`, { field: 'from' });
    const program = await readProgram(spec);
    const want = state.annotations[ANNOTATION.module];
    if (want !== program.digest) {
      throw new ShoalError('conflict', `the state was captured from module ${want ?? '(not named)'}, this image's module is ${program.digest}`, { field: 'from' });
    }
    // The state holds at most the instance's linear memory (its limit comes from the spec) and
    // a little more (globals, tables, WASI state); a bigger file is not read into the agent.
    const maxStateBytes = Math.max(1, Math.floor(spec.resources.memoryBytes / WASM_PAGE)) * WASM_PAGE + STATE_OVERHEAD_BYTES;
    const fh = await open(state.file, 'r');
    let bytes: Buffer;
    try {
      const size = (await fh.stat()).size;
      if (size > maxStateBytes) throw new ShoalError('invalid', `the state is ${size} bytes, more than this spec's memory allows (${maxStateBytes})`, { field: 'from' });
      bytes = await fh.readFile();
    } finally {
      await fh.close();
    }
    if (bytes.length > maxStateBytes) throw new ShoalError('invalid', `the state grew past ${maxStateBytes} bytes while read`, { field: 'from' });
    return launch(spec, program, { bytes, compressed: true });
  }

  async function fork(source: RunningInstance, spec: InstanceSpec): Promise<WasmInstance> {
    if (!(source instanceof WasmInstance)) throw new ShoalError('unsupported', `instance ${source.id} is not a wasm instance`, { field: 'id' });
    const raw = await source.captureBytes(false);
    return launch(spec, source.program, { bytes: raw.state, compressed: false });
  }

  /** Resolves once a spare runner for `memoryBytes` instances is loaded (a warm host; benchmarks wait for it). */
  async function warm(memoryBytes: number): Promise<void> {
    const pages = Math.max(1, Math.floor(memoryBytes / WASM_PAGE));
    pruneSpares(pages);
    if (spares.length === 0) {
      const c = await confine();
      pruneSpares(pages);
      if (spares.length === 0) {
        const r = launchRunner({ maxMemoryPages: pages, confinement: c, spare: true, warmQuickJs: runsJs });
        r.child.unref();
        spares.push(r);
        void r.spawned.then(() => loaded.add(r), () => undefined);
      }
    }
    await spares[0]!.spawned;
    loaded.add(spares[0]!);
  }

  async function recover(known: Array<{ id: string; stateDir: string }>): Promise<RecoveredInstance[]> {
    // Runners end with the agent that started them (they exit when their IPC channel closes).
    return known.map(({ id }) => {
      const running = live.get(id);
      return running ? { id, status: 'running' as const, instance: running } : { id, status: 'stopped' as const, instance: undefined };
    });
  }

  async function destroy(id: string): Promise<void> {
    await live.get(id)?.stop({ graceMs: 0 });
  }

  async function close(): Promise<void> {
    closed = true;
    for (const r of spares) r.child.kill('SIGKILL');
    spares = [];
  }

  const driver = { name: 'wasm', capabilities, fingerprint, start, restore, fork, recover, destroy, close } satisfies Driver & RestoringDriver & ForkingDriver;
  return { ...driver, warm };
}

export class WasmInstance implements CapturingInstance {
  readonly id: string;
  readonly exited: Promise<InstanceExit>;
  /** What it runs, kept for forks. */
  readonly program: Program;
  private readonly runner: Runner;
  private readonly pending = new Map<number, { resolve: (m: RunnerToHost) => void; reject: (e: Error) => void }>();
  private seq = 1;
  private stopping = false;
  private exitReason: { reason: 'oom' | 'crashed' | 'exited'; message: string } | undefined;

  constructor(id: string, runner: Runner, program: Program) {
    this.id = id;
    this.runner = runner;
    this.program = program;
    const child = runner.child;
    child.on('message', (m: RunnerToHost) => this.onMessage(m));
    this.exited = new Promise((resolve) => {
      const settle = (code: number | null, signal: NodeJS.Signals | null): void => {
        for (const p of this.pending.values()) p.reject(new Error('the runner exited'));
        this.pending.clear();
        // SIGXCPU is only sent by the runner's call watchdog.
        const reason = this.stopping || signal === 'SIGXCPU' ? 'killed' : (this.exitReason?.reason ?? (code === 0 ? 'exited' : 'crashed'));
        resolve({ reason, code: code ?? undefined, signal: signal ?? undefined, at: Date.now() });
      };
      if (child.exitCode !== null || child.signalCode !== null) settle(child.exitCode, child.signalCode);
      else child.once('exit', settle);
    });
  }

  get pid(): number | undefined {
    return this.runner.child.pid;
  }

  /** Sends a message and waits for its answer (`ready`, `captured`) or failure. */
  request(message: HostToRunner & { seq: number }, handle?: import('node:net').Server): Promise<RunnerToHost> {
    return new Promise((resolve, reject) => {
      this.pending.set(message.seq, { resolve, reject });
      const sent = (e: Error | null): void => {
        if (e) {
          this.pending.delete(message.seq);
          reject(e);
        }
      };
      if (handle) this.runner.child.send(message, handle, sent);
      else this.runner.child.send(message, sent);
    });
  }

  private onMessage(m: RunnerToHost): void {
    if (m.type === 'exiting') {
      this.exitReason = { reason: m.reason, message: m.message };
      return;
    }
    if (m.type === 'spawned') return;
    const p = m.seq === undefined ? undefined : this.pending.get(m.seq);
    if (!p || m.seq === undefined) return;
    this.pending.delete(m.seq);
    if (m.type === 'failed') p.reject(new Error(m.message));
    else p.resolve(m);
  }

  /** The state's bytes from the runner (compressed for the store, raw for a fork on this host). */
  async captureBytes(compress: boolean): Promise<Extract<RunnerToHost, { type: 'captured' }>> {
    const answer = await this.request({ type: 'capture', seq: this.seq++, compress });
    if (answer.type !== 'captured') throw new ShoalError('internal', `the runner answered ${answer.type} to a capture`);
    return answer;
  }

  async capture(dir: string): Promise<CapturedState> {
    const answer = await this.captureBytes(true);
    const file = join(dir, `wasm-state-${randomBytes(6).toString('hex')}.zst`);
    await writeFile(file, answer.state, { flag: 'wx', mode: 0o600 });
    return {
      mediaType: STATE_MEDIA_TYPE,
      file,
      annotations: {
        [ANNOTATION.driver]: 'wasm',
        [ANNOTATION.module]: this.program.digest,
        [ANNOTATION.memoryBytes]: String(answer.memoryBytes),
        [ANNOTATION.pages]: String(answer.pages),
      },
    };
  }

  async stop(options: { graceMs?: number } = {}): Promise<void> {
    const child = this.runner.child;
    if (child.exitCode !== null || child.signalCode !== null) {
      await this.exited;
      return;
    }
    this.stopping = true;
    const grace = options.graceMs ?? DEFAULT_GRACE_MS;
    if (grace > 0 && child.connected) {
      child.send({ type: 'stop' } satisfies HostToRunner, () => undefined);
      if ((await within(this.exited, grace)) !== undefined) return;
    }
    child.kill('SIGKILL');
    await this.exited;
  }

  async stats(): Promise<InstanceStats> {
    const pid = this.pid;
    const st = pid === undefined ? undefined : await readProcStat(pid);
    if (pid === undefined || !st) return { memoryBytes: undefined, cpuUsageNanos: undefined, pids: undefined };
    const rss = await readStatusField(pid, 'VmRSS');
    return { memoryBytes: rss === undefined ? undefined : Number.parseInt(rss, 10) * 1024, cpuUsageNanos: (st.utimeTicks + st.stimeTicks) * NANOS_PER_TICK, pids: 1 };
  }
}

export function moduleDigest(module: Uint8Array): string {
  return `sha256:${createHash('sha256').update(module).digest('hex')}`;
}

/**
 * What an instance runs: a WASI module, or a shoal/service bundle on QuickJS (args[0] a
 * .mjs/.js entry). Its digest names it in captured states: a state restores only into the
 * same program (for JS, the same QuickJS build and the same bundle).
 */
export interface Program {
  module: Uint8Array;
  bundle?: JsBundle;
  digest: string;
}

let quickjsWasm: Promise<{ digest: string }> | undefined;
const bundles = createBundleCache();
/** A JS program per bundle digest: its built-ins' shims found once. */
const jsPrograms = new Map<string, Program>();

async function readProgram(spec: InstanceSpec): Promise<Program> {
  const entry = spec.args[0];
  if (entry === undefined || !MODULE_FILE.test(entry)) {
    const module = await readModule(spec);
    return { module, digest: moduleDigest(module) };
  }
  const { modules, digest } = await bundles.read(spec.rootfs, entry);
  const known = jsPrograms.get(digest);
  if (known !== undefined) return known;
  const engine = await (quickjsWasm ??= readFile(join(quickjsNodeModules(), QUICKJS_WASM)).then((bytes) => ({ digest: moduleDigest(bytes) })));
  const builtins: Record<string, string> = {};
  for (const code of Object.values(modules)) {
    for (const m of code.matchAll(/\b(?:from|import)\s*\(?\s*['"]((?:node:)?[a-z_/]+)['"]/g)) {
      const name = (m[1] as string).replace(/^node:/, '');
      if (builtins[name] === undefined && isBuiltin(name)) builtins[name] = await builtinShim(name, 'a wasm (QuickJS) component');
    }
  }
  // The runner runs its own copy of QuickJS's module (the same file): none is sent.
  const program = {
    module: new Uint8Array(0),
    bundle: { entry, modules, sdkIndex: SDK_INDEX, builtins },
    digest: `sha256:${createHash('sha256').update(`${engine.digest}\0${digest}`).digest('hex')}`,
  };
  jsPrograms.set(digest, program);
  if (jsPrograms.size > 64) jsPrograms.delete(jsPrograms.keys().next().value as string);
  return program;
}

/** The module named by args[0], read from inside the root only (a link out of it is refused). */
async function readModule(spec: InstanceSpec): Promise<Uint8Array> {
  const entry = spec.args[0];
  if (!entry) throw new ShoalError('invalid', 'spec.args is empty: no module to run', { field: 'args' });
  const root = await realpath(spec.rootfs);
  let path: string;
  try {
    path = await realpath(join(root, entry));
  } catch (e) {
    throw new ShoalError('invalid', `the module ${entry} is not in the image: ${(e as Error).message}`, { field: 'args[0]', cause: e });
  }
  if (!path.startsWith(root + sep)) throw new ShoalError('invalid', `the module path ${entry} leads out of the image's root`, { field: 'args[0]' });
  return readFile(path);
}

function envOf(env: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of env) {
    const eq = kv.indexOf('=');
    if (eq > 0) out[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return out;
}
