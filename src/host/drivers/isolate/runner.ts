// The isolate runner: a Node process (started by the runner launcher, src/host/drivers/
// runner/, confined like a runc instance) holding many V8 isolates of one service version.
// It imports nothing of Shoal's but its siblings, so it runs from a read-only root holding
// node, isolated-vm and this folder. Run with `node --no-node-snapshot` (isolated-vm's
// README requires it).
//
// Per instance: the host sends `start` with the bundle's modules and the instance's
// listening socket (a handle over the IPC channel). The runner answers HTTP on that socket
// (GET /healthz; POST /<Op> → the isolate's dispatch) and reports the instance's end:
// process.exit in the isolate → exited/crashed with its code; its heap over the limit →
// oom; one message (or timer callback) over its CPU-time budget → killed (SIGXCPU).
import { createHash, randomUUID } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { isBuiltin } from 'node:module';
import type { Server as NetServer, Socket } from 'node:net';
import { posix } from 'node:path';
import ivm from 'isolated-vm';
import { BOOTSTRAP, builtinShim, SDK_INDEX } from './isolate-sdk.ts';
import type { ExitMessage, FromRunner, ToRunner } from './messages.ts';

const MAX_BODY_BYTES = 10 * 1024 * 1024;
const SDK_INDEX_SUFFIX = '/.shoal/src/service/index.mjs';
const TYPEBOX = '@sinclair/typebox';
/** Modules that are not the service's own: evaluated ahead, in spares. */
const LIBRARY = /\/\.shoal\/src\/service\/index\.mjs$|\/node_modules\/.*\.mjs$/;

function send(m: FromRunner): void {
  process.send?.(m);
}

type StartMessage = Extract<ToRunner, { t: 'start' }>;

/** What every isolate of this runner runs: one service version. */
interface Version {
  entry: string;
  modules: Record<string, string>;
  memoryMb: number;
  cpuMs: number;
}

/**
 * One isolate. Made ahead of time as a spare (context, globals and the bundle's modules
 * compiled and linked: most of a start's cost), and activated by a start: the instance's
 * env is set, the entry module runs (it calls serve()), the listener is attached.
 */
class Component {
  id = '';
  readonly isolate: ivm.Isolate;
  private context: ivm.Context | undefined;
  private entryModule: ivm.Module | undefined;
  private dispatch: ivm.Reference | undefined;
  private fire: ivm.Reference | undefined;
  private readonly timers = new Map<number, NodeJS.Timeout>();
  private readonly sockets = new Set<Socket>();
  private readonly http = createHttpServer((req, res) => void this.handle(req, res));
  private listener: NetServer | undefined;
  private inFlight = 0;
  private ended: ExitMessage | undefined;
  private serving = false;
  private readonly pendingImports = new Map<number, (r: { status: number; text: string }) => void>();
  readonly cpuMs: number;
  private readonly m: Version;

  constructor(m: Version) {
    this.m = m;
    this.cpuMs = m.cpuMs;
    this.isolate = new ivm.Isolate({ memoryLimit: m.memoryMb, onCatastrophicError: (msg) => this.end({ t: 'exit', id: this.id, reason: 'crashed', message: msg }) });
    this.http.requestTimeout = 60_000;
    this.http.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.once('close', () => this.sockets.delete(s));
    });
  }

  /** Everything of a start that does not depend on the instance. */
  async prepare(): Promise<void> {
    const context = await this.isolate.createContext();
    this.context = context;
    const jail = context.global;
    await jail.set('globalThis', jail.derefInto());
    await jail.set('__h_log', new ivm.Callback((text: string) => send({ t: 'log', id: this.id, text: String(text) })));
    await jail.set('__h_timer', new ivm.Callback((tid: number, ms: number, repeat: boolean) => this.addTimer(tid, ms, repeat)));
    await jail.set('__h_clear', new ivm.Callback((tid: number) => this.clearTimer(tid)));
    await jail.set('__h_exit', new ivm.Callback((code: number) => this.exitFromInside(code)));
    await jail.set('__h_serving', new ivm.Callback(() => (this.serving = true)));
    // A Reference, not a Callback: the isolate awaits the host's promise (result.promise).
    await jail.set('__h_import', new ivm.Reference((name: string, op: string, body: string) => this.importCall(name, op, body)));
    await jail.set('__h_entry', this.m.entry);
    await jail.set(
      '__shoalHash',
      new ivm.Callback((alg: string, parts: string[], enc: string) => {
        const h = createHash(String(alg));
        for (const p of parts) h.update(String(p));
        return h.digest(enc === 'base64' || enc === 'base64url' ? enc : 'hex');
      }),
    );
    await jail.set('__shoalRandomUUID', new ivm.Callback(() => randomUUID()));
    await context.eval(BOOTSTRAP, { timeout: this.cpuMs });
    // The libraries (the SDK, TypeBox) run now, from a prelude module that imports them:
    // they read nothing of the instance. The service's own modules are compiled now and
    // run at activation, with the instance's env.
    const libraries = Object.keys(this.m.modules).filter((p) => LIBRARY.test(p));
    // The built-ins the service imports (their shims read nothing of the instance either).
    for (const code of Object.values(this.m.modules)) for (const m of code.matchAll(/\bfrom\s*['"](node:[\w/]+)['"]/g)) libraries.push(m[1] as string);
    const prelude = await this.isolate.compileModule(libraries.map((p) => `import ${JSON.stringify(p)};`).join('\n'), { filename: 'file:///shoal/prelude.mjs' });
    this.pathOf.set(prelude, '/shoal/prelude.mjs');
    await prelude.instantiate(context, (spec, referrer) => this.resolve(spec, referrer));
    await prelude.evaluate({ timeout: this.cpuMs });
    this.entryModule = await this.load(this.m.entry);
  }

  /** Becomes instance `id`: its env, its program run until it serves, then its socket. */
  async activate(id: string, env: Record<string, string>, server: NetServer): Promise<void> {
    this.id = id;
    const context = this.context as ivm.Context;
    await context.evalClosure('__shoalSetEnv($0)', [env], { arguments: { copy: true }, timeout: this.cpuMs });
    const entry = this.entryModule as ivm.Module;
    await entry.instantiate(context, (spec, referrer) => this.resolve(spec, referrer));
    await entry.evaluate({ timeout: this.cpuMs });
    if (this.ended) throw new Error(this.ended.message ?? `the service exited while starting (code ${this.ended.code})`);
    if (!this.serving) throw new Error(`${this.m.entry} ran to its end without calling serve()`);
    this.dispatch = await context.global.get('__shoalDispatch', { reference: true });
    this.fire = await context.global.get('__shoalFire', { reference: true });
    this.listener = server;
    server.on('connection', (s: Socket) => this.http.emit('connection', s));
  }

  // ---- Modules: the bundle's files, the SDK's index swapped for the isolate's, node: shims.
  private readonly modules = new Map<string, Promise<ivm.Module>>();
  private readonly pathOf = new Map<ivm.Module, string>();

  private load(path: string, source?: string): Promise<ivm.Module> {
    let m = this.modules.get(path);
    if (m === undefined) {
      m = (async () => {
        let code = source ?? this.m.modules[path];
        if (path.endsWith(SDK_INDEX_SUFFIX)) code = SDK_INDEX;
        if (code === undefined) throw new Error(`module ${path} is not in the bundle`);
        if (path.endsWith('.json')) code = `export default ${code};`;
        // isolated-vm gives import.meta only from inside the isolate: written out instead.
        const meta = `({ url: ${JSON.stringify(`file://${path}`)}, main: ${path === this.m.entry}, filename: ${JSON.stringify(path)} })`;
        code = code.replace(/\bimport\.meta\b/g, meta);
        const mod = await this.isolate.compileModule(code, { filename: `file://${path}` });
        this.pathOf.set(mod, path);
        return mod;
      })();
      this.modules.set(path, m);
    }
    return m;
  }

  private async resolve(spec: string, referrer: ivm.Module): Promise<ivm.Module> {
    const from = this.pathOf.get(referrer) ?? this.m.entry;
    if (spec.startsWith('node:') || isBuiltin(spec)) return this.load(`node:${spec.replace(/^node:/, '')}`, await builtinShim(spec, 'an isolate component'));
    if (spec.startsWith('./') || spec.startsWith('../') || spec.startsWith('/')) return this.load(posix.resolve(posix.dirname(from), spec));
    if (spec === TYPEBOX || spec.startsWith(`${TYPEBOX}/`)) {
      const root = this.packageRoot(from, TYPEBOX);
      const pkg = JSON.parse(this.m.modules[`${root}/package.json`] ?? '{}') as { exports?: Record<string, string> };
      const sub = spec === TYPEBOX ? '.' : `./${spec.slice(TYPEBOX.length + 1)}`;
      const target = pkg.exports?.[sub];
      if (target === undefined) throw new Error(`${spec} is not in the bundle`);
      return this.load(posix.join(root, target));
    }
    throw new Error(`${from} imports ${JSON.stringify(spec)}, which the bundle does not hold`);
  }

  private packageRoot(from: string, name: string): string {
    for (let dir = posix.dirname(from); ; dir = posix.dirname(dir)) {
      const root = posix.join(dir, 'node_modules', name);
      if (this.m.modules[`${root}/package.json`] !== undefined) return root;
      if (dir === '/') throw new Error(`${name} is not in the bundle`);
    }
  }

  // ---- Serving.

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const path = url.split('?')[0] ?? '/';
    const json = (status: number, body: string): void => {
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    if (this.ended || this.dispatch === undefined) {
      req.resume();
      return json(503, JSON.stringify({ error: { code: 'unavailable', message: `instance ${this.id} is stopping` } }));
    }
    if (path === '/healthz') {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 });
      return void res.end('ok');
    }
    if (req.method !== 'POST') {
      req.resume();
      res.setHeader('allow', 'POST');
      return json(405, JSON.stringify({ error: { code: 'unsupported', message: `use POST, not ${req.method}` } }));
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req as AsyncIterable<Buffer>) {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        res.setHeader('connection', 'close');
        return json(413, JSON.stringify({ error: { code: 'too-large', message: `the body is larger than ${MAX_BODY_BYTES} bytes` } }));
      }
      chunks.push(c);
    }
    this.inFlight++;
    try {
      const out = (await this.dispatch.apply(undefined, [path.slice(1), Buffer.concat(chunks).toString('utf8')], {
        timeout: this.cpuMs,
        result: { promise: true, copy: true },
      })) as string;
      const { status, body } = JSON.parse(out) as { status: number; body: string };
      json(status, body);
    } catch (e) {
      // The caller hears first; then the instance ends (which closes its connections).
      res.once('finish', () => this.failed(e));
      res.setHeader('connection', 'close');
      json(503, JSON.stringify({ error: { code: 'unavailable', message: `instance ${this.id} ended: ${(e as Error).message}` } }));
    } finally {
      this.inFlight--;
    }
  }

  /** An error out of the isolate: the memory limit, the CPU budget, process.exit, or a bug of the runner's. */
  private failed(e: unknown): void {
    if (this.ended) return;
    const message = (e as Error)?.message ?? String(e);
    if (this.isolate.isDisposed || /memory limit/i.test(message) || this.nearHeapLimit()) this.end({ t: 'exit', id: this.id, reason: 'oom', message });
    else if (/timed out/i.test(message)) this.end({ t: 'exit', id: this.id, reason: 'killed', signal: 'SIGXCPU', message: `a message ran over its ${this.cpuMs} ms of CPU time` });
    else this.end({ t: 'exit', id: this.id, reason: 'crashed', code: 1, message });
  }

  /** A heap this full spends its time collecting: a CPU limit hit there is the memory's fault. */
  private nearHeapLimit(): boolean {
    try {
      const h = this.isolate.getHeapStatisticsSync();
      return h.used_heap_size + h.externally_allocated_size > 0.9 * h.heap_size_limit;
    } catch {
      return true; // disposed meanwhile: by the memory limit
    }
  }

  private exitFromInside(code: number): void {
    // Let the isolate unwind first: the reply in flight (if any) still goes out.
    setImmediate(() => this.end({ t: 'exit', id: this.id, reason: code === 0 ? 'exited' : 'crashed', code }));
    this.closing = true;
  }
  private closing = false;

  private addTimer(tid: number, ms: number, repeat: boolean): void {
    if (this.ended || this.closing) return;
    const run = (): void => {
      if (!repeat) this.timers.delete(tid);
      if (this.ended || this.fire === undefined) return;
      this.fire.apply(undefined, [tid], { timeout: this.cpuMs }).catch((e: unknown) => {
        if (this.closing) return; // process.exit's own unwinding
        this.failed(e);
      });
    };
    this.timers.set(tid, repeat ? setInterval(run, ms) : setTimeout(run, ms));
  }

  private clearTimer(tid: number): void {
    const t = this.timers.get(tid);
    if (t !== undefined) clearTimeout(t);
    this.timers.delete(tid);
  }

  private importCall(name: string, op: string, body: string): Promise<{ status: number; text: string }> {
    const seq = ++importSeq;
    return new Promise((resolve) => {
      this.pendingImports.set(seq, resolve);
      importOwners.set(seq, this);
      send({ t: 'import', seq, id: this.id, name, op, body });
    });
  }

  importReply(seq: number, r: { status: number; text: string }): void {
    const resolve = this.pendingImports.get(seq);
    this.pendingImports.delete(seq);
    importOwners.delete(seq);
    resolve?.(r);
  }

  stats(): { memoryBytes: number; cpuNanos: number } {
    const h = this.isolate.getHeapStatisticsSync();
    return { memoryBytes: h.total_physical_size + h.externally_allocated_size, cpuNanos: Number(this.isolate.cpuTime) };
  }

  async stop(graceMs: number): Promise<void> {
    this.closing = true;
    this.listener?.close();
    for (const s of this.sockets) if (!(s as Socket & { _httpMessage?: unknown })._httpMessage) s.destroy();
    const deadline = Date.now() + graceMs;
    while (this.inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    this.end({ t: 'exit', id: this.id, reason: 'killed', signal: 'SIGTERM' });
  }

  /** Ends the instance once: its socket closes, its isolate goes, the host hears why. */
  end(exit: ExitMessage): void {
    if (this.ended) return;
    this.ended = exit;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    this.listener?.close();
    for (const s of this.sockets) s.destroy();
    for (const [seq] of this.pendingImports) importOwners.delete(seq);
    components.delete(this.id);
    if (!this.isolate.isDisposed) this.isolate.dispose();
    send(exit);
  }
}

const components = new Map<string, Component>();
let version: Version | undefined;
/** One isolate prepared ahead for the next start of this version (most of a start's cost). */
let spare: Promise<Component | undefined> | undefined;

async function takeSpare(v: Version): Promise<Component | undefined> {
  const s = spare;
  spare = undefined;
  const c = await s;
  return c !== undefined && !c.isolate.isDisposed ? c : undefined;
}

function refillSpare(v: Version): void {
  if (spare !== undefined) return;
  spare = new Promise((resolve) => {
    // After the reply has gone: the spare is made while the runner would idle.
    setImmediate(() => {
      const c = new Component(v);
      c.prepare().then(
        () => resolve(c),
        () => {
          if (!c.isolate.isDisposed) c.isolate.dispose();
          resolve(undefined);
        },
      );
    });
  });
}
/** Import calls in flight, by their seq (one counter for the runner: replies name only the seq). */
const importOwners = new Map<number, Component>();
let importSeq = 0;
async function onMessage(m: ToRunner, handle: unknown): Promise<void> {
  switch (m.t) {
    case 'start': {
      if (components.has(m.id)) return send({ t: 'reply', seq: m.seq, ok: false, message: `instance ${m.id} is already running` });
      if (m.modules !== undefined) version = { entry: m.entry, modules: m.modules, memoryMb: m.memoryMb, cpuMs: m.messageCpuMs };
      const v = version;
      if (v === undefined) return send({ t: 'reply', seq: m.seq, ok: false, message: 'the runner has no bundle yet' });
      const same = v.entry === m.entry && v.memoryMb === m.memoryMb && v.cpuMs === m.messageCpuMs;
      const want: Version = same ? v : { ...v, entry: m.entry, memoryMb: m.memoryMb, cpuMs: m.messageCpuMs };
      let c: Component | undefined;
      try {
        c = same ? await takeSpare(v) : undefined;
        if (c === undefined) {
          c = new Component(want);
          await c.prepare();
        }
        components.set(m.id, c);
        await c.activate(m.id, m.env, handle as NetServer);
        send({ t: 'reply', seq: m.seq, ok: true });
      } catch (e) {
        components.delete(m.id);
        if (c !== undefined && !c.isolate.isDisposed) c.isolate.dispose();
        (handle as NetServer | undefined)?.close();
        send({ t: 'reply', seq: m.seq, ok: false, message: (e as Error).message ?? String(e) });
      }
      if (same) refillSpare(v);
      return;
    }
    case 'stop': {
      await components.get(m.id)?.stop(m.graceMs);
      return send({ t: 'reply', seq: m.seq, ok: true });
    }
    case 'stats': {
      const c = components.get(m.id);
      if (c === undefined) return send({ t: 'reply', seq: m.seq, ok: false, message: `no instance ${m.id}` });
      return send({ t: 'reply', seq: m.seq, ok: true, ...c.stats() });
    }
    case 'import-reply':
      return importOwners.get(m.seq)?.importReply(m.seq, { status: m.status, text: m.text });
    case 'shutdown':
      for (const c of components.values()) c.end({ t: 'exit', id: c.id, reason: 'killed', signal: 'SIGTERM' });
      process.disconnect?.();
      return;
    default: {
      const never: never = m;
      throw new Error(`unknown message ${JSON.stringify(never)}`);
    }
  }
}

process.on('message', (m: ToRunner, handle: unknown) => void onMessage(m, handle));
// The host went away: nothing here can be reached any more.
process.on('disconnect', () => process.exit(0));
send({ t: 'ready', pid: process.pid });
