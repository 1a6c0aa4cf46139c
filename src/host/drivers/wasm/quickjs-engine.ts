// A shoal/service program on QuickJS compiled to WebAssembly (quickjs-emscripten's
// release-sync build): the wasm driver's second kind of component, next to WASI modules
// (engine.ts). It runs inside the runner process, like engine.ts, and shares its state
// format: the non-zero 4 KiB pages of the one linear memory, plus the runtime's and the
// context's pointers in place of exported globals.
//
// Why a snapshot of memory is the whole state: QuickJS keeps every object, closure,
// promise and its runtime in linear memory; the guest has no host functions (quickjs-guest.ts
// says why), so nothing of it lives in the JS wrapper. At rest (between messages, which the
// runner serves one at a time to completion) the stack pointer is back at its base.
// Restoring = a fresh instance of the same wasm module given a memory of the same size,
// its bytes overwritten by the state, and the wrapper's runtime and context objects
// re-attached to the saved pointers. This leans on the wrapper's internals (its
// constructor arguments, `ffi`, `callbacks`): the package version is pinned.
import { isBuiltin } from 'node:module';
import { posix } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { QuickJSContext, QuickJSRuntime, QuickJSWASMModule } from 'quickjs-emscripten-core';
import { AbiError, nonZeroPages, STATE_PAGE, WASM_PAGE, type RawState, type Reply } from './engine.ts';
import { QUICKJS_BOOTSTRAP } from './quickjs-guest.ts';

/** The wrapper's classes and a variant built around a given compiled module and memory. */
export interface QuickJsLibrary {
  core: typeof import('quickjs-emscripten-core');
  /** Absolute file URLs of the release-sync variant's ffi and emscripten glue. */
  ffiUrl: string;
  emscriptenUrl: string;
}

/** Loads the wrapper from a node_modules folder (the runner is told where; it may read nothing else). */
export async function loadQuickJs(nodeModules: string): Promise<QuickJsLibrary> {
  const url = (p: string): string => new URL(`file://${posix.join(nodeModules, p)}`).href;
  const core = (await import(url('quickjs-emscripten-core/dist/index.mjs'))) as typeof import('quickjs-emscripten-core');
  return { core, ffiUrl: url('@jitl/quickjs-wasmfile-release-sync/dist/ffi.mjs'), emscriptenUrl: url('@jitl/quickjs-wasmfile-release-sync/dist/emscripten-module.mjs') };
}

/** QuickJS compiled to wasm, inside the node_modules folder given to loadQuickJs. */
export const QUICKJS_WASM = '@jitl/quickjs-wasmfile-release-sync/dist/emscripten-module.wasm';

/** What a JS component is made of: the bundle's modules and the SDK's swapped-in sources. */
export interface JsBundle {
  entry: string;
  /** Module sources by absolute path inside the image. */
  modules: Record<string, string>;
  /** Replaces the bundle's `/.shoal/src/service/index.mjs` (the isolate driver's SDK index). */
  sdkIndex: string;
  /** Module sources for `node:` built-ins the bundle imports (others fail to load). */
  builtins: Record<string, string>;
}

export interface QuickJsOptions {
  maxMemoryBytes: number;
  env: Record<string, string>;
  /** Where the guest's log lines go (the instance log). */
  log: (text: string) => void;
}

const SDK_INDEX_SUFFIX = '/.shoal/src/service/index.mjs';
const TYPEBOX = '@sinclair/typebox';
const RT = 'quickjs.rt';
const CTX = 'quickjs.ctx';

/** What the guest did in one turn: replies that settled, an exit, running out of memory, its next timer. */
export interface Outcome {
  replies: Map<number, Reply>;
  exit: number | null;
  oom: boolean;
  /** Milliseconds to the earliest timer; null: none. */
  wakeInMs: number | null;
}

export interface Collected {
  results: Array<[number, string]>;
  log: string;
  exit: number | null;
  served: boolean;
  oom: boolean;
  wake: number | null;
}

export class QuickJsExit extends Error {
  readonly code: number;
  constructor(code: number) {
    super(`process.exit(${code})`);
    this.code = code;
  }
}

export class QuickJsComponent {
  private readonly memory: WebAssembly.Memory;
  private readonly runtime: QuickJSRuntime;
  private readonly context: QuickJSContext;
  private readonly options: QuickJsOptions;
  /** The first timer set while starting (the runner schedules it). */
  startWake: number | null = null;
  /** The libraries' state this start made (no prelude was given): the host keeps it for the next start. */
  madePrelude: RawState | undefined;

  private constructor(memory: WebAssembly.Memory, runtime: QuickJSRuntime, context: QuickJSContext, options: QuickJsOptions) {
    this.memory = memory;
    this.runtime = runtime;
    this.context = context;
    this.options = options;
  }

  /**
   * A fresh instance: bootstrap, the libraries, env, the entry module (which calls serve()).
   * From `prelude` (a capture made by an earlier start of the same bundle right after its
   * libraries ran) the first two steps are a restore instead: the libraries (the SDK and
   * TypeBox, most of the bundle) read nothing of the instance, so their evaluated state is
   * the same for every instance. Without one, the start makes it (`madePrelude`).
   */
  static async start(lib: QuickJsLibrary, wasm: WebAssembly.Module, bundle: JsBundle, options: QuickJsOptions, prelude?: RawState): Promise<QuickJsComponent> {
    let c: QuickJsComponent;
    let made: RawState | undefined;
    // A prelude made under a larger memory limit does not fit this instance: start afresh.
    if (prelude !== undefined && prelude.memoryPages * WASM_PAGE > options.maxMemoryBytes) prelude = undefined;
    if (prelude !== undefined) c = await QuickJsComponent.restore(lib, wasm, prelude, options);
    else {
      const { mod, memory } = await instantiate(lib, wasm, options.maxMemoryBytes, undefined);
      const runtime = mod.newRuntime();
      setHeapLimit(runtime, options.maxMemoryBytes);
      c = new QuickJsComponent(memory, runtime, runtime.newContext(), options);
      c.evalScript(QUICKJS_BOOTSTRAP, '/.shoal/bootstrap.js');
    }
    c.runtime.setModuleLoader(
      (name) => loadModule(bundle, name),
      (base, requested) => resolveModule(bundle, base, requested),
    );
    if (prelude === undefined) {
      c.evalModule(preludeOf(bundle), '/.shoal/prelude.mjs', 'loading the libraries');
      made = c.capture();
    }
    c.evalScript(`__shoalSetEnv(${JSON.stringify(options.env)})`, '/.shoal/env.js');
    c.evalModule(`import ${JSON.stringify(bundle.entry)};`, '/.shoal/start.mjs', `starting ${bundle.entry}`);
    const after = c.collect();
    if (after.exit !== null) throw new QuickJsExit(after.exit);
    if (!after.served) throw new AbiError(`${bundle.entry} did not call serve() when it started`);
    c.startWake = after.wake;
    c.madePrelude = made;
    // The loader is not needed again (and a restored copy has none): no dynamic import().
    c.runtime.removeModuleLoader();
    return c;
  }

  /**
   * Runs each step of a start, a message, a capture and a restore once on a throwaway
   * program, so that a spare runner has compiled QuickJS's code paths (V8 compiles wasm
   * functions lazily, on first call) before an instance needs them.
   */
  static async warmUp(lib: QuickJsLibrary, wasm: WebAssembly.Module): Promise<void> {
    const options = { maxMemoryBytes: 16 * 1024 * 1024, env: {}, log: () => undefined };
    const sdkIndex = `export function serve(def, handlers) { Object.defineProperty(globalThis, '__shoalDispatch', { value: async (op, text) => JSON.stringify({ status: 200, body: JSON.stringify(await handlers[op](JSON.parse(text))) }) }); globalThis.__shoalHost.serving(); }`;
    const bundle: JsBundle = {
      entry: '/app/warm.mjs',
      modules: {
        '/app/warm.mjs': `import { serve } from './.shoal/src/service/index.mjs';\nimport { lib } from './node_modules/x/lib.mjs';\nlet n = 0;\nserve({}, { Op: async (x) => { await null; return { n: ++n, x, s: lib(String(x.v)) }; } });`,
        '/app/.shoal/src/service/index.mjs': '',
        '/app/node_modules/x/lib.mjs': 'export const lib = (s) => s.split("").reverse().join("") + JSON.stringify({ a: [1, 2, { b: null }] });',
      },
      sdkIndex,
      builtins: {},
    };
    const first = await QuickJsComponent.start(lib, wasm, bundle, options);
    first.call(1, 'Op', Buffer.from('{"v":1}'));
    const again = await QuickJsComponent.start(lib, wasm, bundle, options, first.madePrelude);
    again.call(1, 'Op', Buffer.from('{"v":2}'));
    const copy = await QuickJsComponent.restore(lib, wasm, again.capture(), options);
    copy.call(2, 'Op', Buffer.from('{"v":3}'));
    copy.fire();
  }

  /** An instance that continues from `state` (a capture of another QuickJsComponent). */
  static async restore(lib: QuickJsLibrary, wasm: WebAssembly.Module, state: RawState, options: QuickJsOptions): Promise<QuickJsComponent> {
    if (state.memoryPages * WASM_PAGE > options.maxMemoryBytes) {
      throw new AbiError(`the state's memory (${state.memoryPages * WASM_PAGE} bytes) is over this instance's limit (${options.maxMemoryBytes} bytes)`);
    }
    const rt = state.globals.find((g) => g.name === RT);
    const ctx = state.globals.find((g) => g.name === CTX);
    if (!rt || !ctx) throw new AbiError('the state is not a QuickJS component state (no runtime and context pointers)');
    const { mod, memory } = await instantiate(lib, wasm, options.maxMemoryBytes, state.memoryPages);
    // The fresh instance's start-up wrote into memory; what the state does not hold was zero.
    const mem = Buffer.from(memory.buffer);
    if (mem.length !== state.memoryPages * WASM_PAGE) throw new AbiError(`the state's memory is ${state.memoryPages} pages, the instance's ${mem.length / WASM_PAGE}`);
    for (const page of nonZeroPages(mem, 0, mem.length)) mem.fill(0, page * STATE_PAGE, (page + 1) * STATE_PAGE);
    for (let i = 0; i < state.pageIndexes.length; i++) state.pageData.copy(mem, state.pageIndexes[i]! * STATE_PAGE, i * STATE_PAGE, (i + 1) * STATE_PAGE);
    const internals = mod as unknown as { ffi: { QTS_FreeRuntime(p: unknown): void }; module: unknown; callbacks: unknown };
    const rtPtr = Number(rt.value);
    const RuntimeClass = lib.core.QuickJSRuntime as unknown as new (args: object) => QuickJSRuntime;
    const runtime = new RuntimeClass({
      module: internals.module,
      ffi: internals.ffi,
      rt: new lib.core.Lifetime(rtPtr, undefined, (p: unknown) => internals.ffi.QTS_FreeRuntime(p)),
      callbacks: internals.callbacks,
    });
    const context = runtime.newContext({ contextPointer: Number(ctx.value) as never });
    // The state holds its source's limit; this instance's own applies.
    setHeapLimit(runtime, options.maxMemoryBytes);
    return new QuickJsComponent(memory, runtime, context, options);
  }

  get memoryBytes(): number {
    return this.memory.buffer.byteLength;
  }

  /**
   * Starts one message (`id` names it in the outcome). Its reply is in this outcome when
   * the handler settles without waiting on a timer, else in a later one (fire()).
   */
  call(id: number, op: string, body: Uint8Array): Outcome {
    const ctx = this.context;
    const fn = ctx.getProp(ctx.global, '__shoalCall');
    const args = [ctx.newNumber(id), ctx.newString(op), ctx.newString(Buffer.from(body).toString('utf8')), ctx.newString(randomBytes(16).toString('hex'))];
    try {
      const r = ctx.callFunction(fn, ctx.undefined, ...args);
      if (r.error) throw this.guestError(r.error, op);
      r.value.dispose();
    } finally {
      for (const a of args) a.dispose();
      fn.dispose();
    }
    return this.settle();
  }

  /** Runs the timers that are due (the runner calls it at the last outcome's `wake`). */
  fire(): Outcome {
    this.evalScript('__shoalFire()', '/.shoal/fire.js');
    return this.settle();
  }

  /** What is due without running anything (after a restore: when to wake). */
  poll(): Outcome {
    return this.settle();
  }

  private settle(): Outcome {
    this.runtime.executePendingJobs();
    const out = this.collect();
    const replies = new Map<number, Reply>();
    for (const [id, text] of out.results) replies.set(id, readReply(text));
    return { replies, exit: out.exit, oom: out.oom, wakeInMs: out.wake };
  }

  /** The non-zero pages of linear memory and the pointers to re-attach (call between messages). */
  capture(): RawState {
    const mem = Buffer.from(this.memory.buffer);
    const indexes = nonZeroPages(mem, 0, mem.length);
    const data = Buffer.allocUnsafe(indexes.length * STATE_PAGE);
    for (let i = 0; i < indexes.length; i++) mem.copy(data, i * STATE_PAGE, indexes[i]! * STATE_PAGE, (indexes[i]! + 1) * STATE_PAGE);
    const internals = this.runtime as unknown as { rt: { value: number } };
    const ctxPtr = (this.context as unknown as { ctx: { value: number } }).ctx.value;
    return {
      memoryPages: mem.length / WASM_PAGE,
      globals: [
        { name: RT, kind: 'number', value: String(internals.rt.value) },
        { name: CTX, kind: 'number', value: String(ctxPtr) },
      ],
      pageIndexes: indexes,
      pageData: data,
    };
  }

  private collect(): Collected {
    const r = this.context.evalCode('__shoalCollect()', '/.shoal/collect.js');
    if (r.error) throw this.guestError(r.error, 'collect');
    const text = this.context.getString(r.value);
    r.value.dispose();
    const out = readTurn(text);
    if (out.log) this.options.log(out.log);
    return out;
  }

  private evalModule(code: string, name: string, what: string): void {
    const r = this.context.evalCode(code, name, { type: 'module' });
    if (r.error) throw this.guestError(r.error, what);
    r.value.dispose();
    this.runtime.executePendingJobs();
  }

  private evalScript(code: string, name: string): void {
    const r = this.context.evalCode(code, name);
    if (r.error) throw this.guestError(r.error, name);
    r.value.dispose();
  }

  private guestError(handle: { dispose(): void }, what: string): Error {
    const dumped = this.context.dump(handle as never) as { name?: string; message?: string; stack?: string } | string;
    handle.dispose();
    const message = typeof dumped === 'object' && dumped !== null ? `${dumped.name ?? 'Error'}: ${dumped.message ?? ''}${dumped.stack ? `\n${dumped.stack}` : ''}` : String(dumped);
    return new AbiError(`${what}: ${message}`);
  }
}

/**
 * QuickJS's own allocator stops short of the linear memory's limit, so running out is a JS
 * exception (the runner ends the instance as oom), not an abort of the whole module.
 */
function setHeapLimit(runtime: QuickJSRuntime, maxMemoryBytes: number): void {
  runtime.setMemoryLimit(Math.max(1 << 20, maxMemoryBytes - (4 << 20)));
}

// ---- What the guest hands back is the program's to shape (it can replace anything in its
// heap): checked here, a malformed turn ends the instance (AbiError → crashed).

const MAX_TIMER_MS = 2 ** 31 - 1;

export function readTurn(text: string): Collected {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new AbiError('the guest returned a turn that is not JSON');
  }
  const t = v as Partial<Record<keyof Collected, unknown>>;
  const bad = (what: string): never => {
    throw new AbiError(`the guest returned a malformed turn (${what})`);
  };
  if (typeof t !== 'object' || t === null) bad('not an object');
  if (!Array.isArray(t.results)) bad('results');
  const results: Array<[number, string]> = [];
  for (const r of t.results as unknown[]) {
    const pair = Array.isArray(r) ? (r as unknown[]) : [];
    if (!Number.isSafeInteger(pair[0]) || typeof pair[1] !== 'string') bad('a result');
    results.push([pair[0] as number, pair[1] as string]);
  }
  const exit = t.exit === null || t.exit === undefined ? null : Number.isInteger(t.exit) && (t.exit as number) >= 0 && (t.exit as number) <= 255 ? (t.exit as number) : bad('exit');
  let wake: number | null = null;
  if (t.wake !== null && t.wake !== undefined) {
    if (typeof t.wake !== 'number' || !Number.isFinite(t.wake)) bad('wake');
    wake = Math.min(MAX_TIMER_MS, Math.max(0, Math.floor(t.wake as number)));
  }
  return { results, log: typeof t.log === 'string' ? t.log : '', exit, served: t.served === true, oom: t.oom === true, wake };
}

export function readReply(text: string): Reply {
  let v: { status?: unknown; body?: unknown };
  try {
    v = JSON.parse(text) as typeof v;
  } catch {
    throw new AbiError('the guest returned a reply that is not JSON');
  }
  if (!Number.isInteger(v?.status) || (v.status as number) < 200 || (v.status as number) > 599 || typeof v.body !== 'string') {
    throw new AbiError('the guest returned a malformed reply (status 200-599 and a body string)');
  }
  return { status: v.status as number, body: Buffer.from(v.body, 'utf8') };
}

async function instantiate(lib: QuickJsLibrary, wasm: WebAssembly.Module, maxMemoryBytes: number, pages: number | undefined): Promise<{ mod: QuickJSWASMModule; memory: WebAssembly.Memory }> {
  const maximum = Math.floor(maxMemoryBytes / WASM_PAGE);
  // emscripten's glue starts with 16 MiB; a restore gives the state's size (the glue's heap
  // views break if the memory grows from outside).
  const initial = pages ?? 256;
  if (initial > maximum) throw new AbiError(`a QuickJS component needs at least ${initial * WASM_PAGE} bytes of memory; the limit is ${maxMemoryBytes}`);
  const memory = new WebAssembly.Memory({ initial, maximum });
  const variant = {
    type: 'sync' as const,
    importFFI: () => import(lib.ffiUrl).then((m: { QuickJSFFI: unknown }) => m.QuickJSFFI),
    importModuleLoader: () => import(lib.emscriptenUrl).then((m: { default: unknown }) => m.default),
  };
  const custom = lib.core.newVariant(variant as never, { wasmModule: wasm, wasmMemory: memory });
  const mod = await lib.core.newQuickJSWASMModuleFromVariant(custom as never);
  return { mod, memory };
}

// ---- Modules: the bundle's files, the SDK's index swapped, node: built-ins as shims.

/** Not the service's own code: the SDK's index, node_modules, the built-ins' shims. */
const LIBRARY = /\/\.shoal\/src\/service\/index\.mjs$|\/node_modules\/.*\.mjs$/;

/** A module that imports every library of the bundle (evaluated before the instance's env exists). */
function preludeOf(bundle: JsBundle): string {
  const libraries = [...Object.keys(bundle.modules).filter((p) => LIBRARY.test(p)), ...Object.keys(bundle.builtins).map((b) => `node:${b}`)];
  return libraries.map((p) => `import ${JSON.stringify(p)};`).join('\n');
}

function loadModule(bundle: JsBundle, path: string): string {
  if (path.startsWith('node:')) {
    const shim = bundle.builtins[path.slice(5)];
    if (shim === undefined) throw new Error(`${path} is not available in a wasm (QuickJS) component`);
    return shim;
  }
  let code = path.endsWith(SDK_INDEX_SUFFIX) ? bundle.sdkIndex : bundle.modules[path];
  if (code === undefined) throw new Error(`module ${path} is not in the bundle`);
  if (path.endsWith('.json')) code = `export default ${code};`;
  // import.meta carries only what QuickJS gives; main and filename are written out.
  const meta = `({ url: ${JSON.stringify(`file://${path}`)}, main: ${path === bundle.entry}, filename: ${JSON.stringify(path)} })`;
  return code.replace(/\bimport\.meta\b/g, meta);
}

function resolveModule(bundle: JsBundle, base: string, spec: string): string {
  if (spec.startsWith('node:') || isBuiltin(spec)) return `node:${spec.replace(/^node:/, '')}`;
  const from = base.startsWith('/') && !base.startsWith('/.shoal/start') ? base : bundle.entry;
  if (spec.startsWith('/')) return posix.normalize(spec);
  if (spec.startsWith('./') || spec.startsWith('../')) return posix.resolve(posix.dirname(from), spec);
  if (spec === TYPEBOX || spec.startsWith(`${TYPEBOX}/`)) {
    for (let dir = posix.dirname(from); ; dir = posix.dirname(dir)) {
      const root = posix.join(dir, 'node_modules', TYPEBOX);
      const pkgText = bundle.modules[`${root}/package.json`];
      if (pkgText !== undefined) {
        const pkg = JSON.parse(pkgText) as { exports?: Record<string, string> };
        const target = pkg.exports?.[spec === TYPEBOX ? '.' : `./${spec.slice(TYPEBOX.length + 1)}`];
        if (target === undefined) throw new Error(`${spec} is not in the bundle`);
        return posix.join(root, target);
      }
      if (dir === '/') throw new Error(`${TYPEBOX} is not in the bundle`);
    }
  }
  throw new Error(`${from} imports ${JSON.stringify(spec)}, which the bundle does not hold`);
}
