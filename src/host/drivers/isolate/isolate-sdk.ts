// JavaScript that runs INSIDE each V8 isolate (as text: the runner compiles it there).
//
// BOOTSTRAP gives the isolate the few globals a shoal/service program uses that V8 alone
// lacks (timers, console, a `process` with env and exit), each backed by a host callback
// the runner installs as __h_* globals and this script takes away again.
//
// SDK_INDEX replaces the bundle's /app/.shoal/src/service/index.mjs: the same exports as
// shoal/service, whose serve() registers the handlers with the runner instead of binding a
// socket (the runner owns the socket and the HTTP; the isolate sees operations only).
// Everything else of the SDK (defineService, ServiceError, the typed clients, TypeBox) is
// the bundle's own code, unchanged.

export const BOOTSTRAP = String.raw`
(() => {
  const importRef = __h_import;
  const importCall = (name, op, body) => importRef.apply(undefined, [String(name), String(op), String(body)], { result: { promise: true, copy: true } });
  const h = { log: __h_log, timer: __h_timer, clear: __h_clear, exit: __h_exit, importCall, serving: __h_serving, entry: __h_entry };
  for (const k of ['__h_log', '__h_timer', '__h_clear', '__h_exit', '__h_import', '__h_serving', '__h_entry']) delete globalThis[k];
  const timers = new Map();
  let nextTimer = 1;
  const add = (fn, ms, args, repeat) => {
    if (typeof fn !== 'function') throw new TypeError('timer callback must be a function');
    const id = nextTimer++;
    timers.set(id, { run: () => fn(...args), repeat });
    h.timer(id, Math.max(0, Number(ms) || 0), repeat);
    return id;
  };
  const clear = (id) => {
    if (timers.delete(Number(id))) h.clear(Number(id));
  };
  Object.defineProperty(globalThis, '__shoalFire', {
    value: (id) => {
      const t = timers.get(id);
      if (t === undefined) return;
      if (!t.repeat) timers.delete(id);
      t.run();
    },
  });
  globalThis.setTimeout = (fn, ms, ...args) => add(fn, ms, args, false);
  globalThis.setInterval = (fn, ms, ...args) => add(fn, ms, args, true);
  globalThis.setImmediate = (fn, ...args) => add(fn, 0, args, false);
  globalThis.clearTimeout = clear;
  globalThis.clearInterval = clear;
  globalThis.clearImmediate = clear;
  if (typeof globalThis.queueMicrotask !== 'function') globalThis.queueMicrotask = (fn) => void Promise.resolve().then(fn);
  const show = (a) => {
    if (typeof a === 'string') return a;
    if (a instanceof Error) return a.stack || String(a);
    try { return JSON.stringify(a); } catch { return String(a); }
  };
  const line = (args) => h.log(args.map(show).join(' ') + '\n');
  globalThis.console = { log: (...a) => line(a), info: (...a) => line(a), warn: (...a) => line(a), error: (...a) => line(a), debug: (...a) => line(a) };
  const stream = { write: (s) => { h.log(String(s)); return true; } };
  const start = Date.now();
  const proc = {
    env: {},
    argv: ['node', h.entry],
    pid: 1,
    platform: 'linux',
    version: 'v0.0.0-isolate',
    versions: {},
    stdout: stream,
    stderr: stream,
    cwd: () => '/app',
    getuid: () => -1,
    getgid: () => -1,
    uptime: () => (Date.now() - start) / 1000,
    on() { return proc; },
    once() { return proc; },
    off() { return proc; },
    nextTick: (fn, ...args) => queueMicrotask(() => fn(...args)),
    exit(code) {
      h.exit(Number(code ?? 0) || 0);
      throw new Error('process.exit(' + code + '): the instance ends');
    },
  };
  globalThis.process = proc;
  // The instance's env arrives when a prepared isolate becomes an instance.
  Object.defineProperty(globalThis, '__shoalSetEnv', { value: (env) => { proc.env = env; } });
  globalThis.__shoalHost = { importCall: h.importCall, serving: h.serving };
})();
`;

export const SDK_INDEX = String.raw`
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { isServiceDefinition } from './define.mjs';
import { ServiceError, toServiceError } from './errors.mjs';
import { createClient } from './client.mjs';
import { createLogger, silentLogger } from './log.mjs';
export { defineService, toServiceDescription, isServiceDefinition } from './define.mjs';
export { connect, createClient, createImportClients, socketTransport } from './client.mjs';
export { ServiceError, statusForCode } from './errors.mjs';
export { createLogger, silentLogger } from './log.mjs';
export { Type } from '@sinclair/typebox';

const neverAborted = Object.freeze({ aborted: false, reason: undefined, onabort: null, addEventListener() {}, removeEventListener() {}, throwIfAborted() {} });
const host = globalThis.__shoalHost;
let served = false;

export async function serve(def, handlers, options = {}) {
  if (!isServiceDefinition(def)) throw new TypeError('serve: the first argument must be a definition made by defineService');
  if (served) throw new TypeError('serve: an isolate serves one service');
  const env = globalThis.process.env;
  const validateOutput = options.validateOutput ?? (env.NODE_ENV === 'development' || env.SHOAL_VALIDATE_OUTPUT === '1');
  const log = options.logger === false ? silentLogger : (options.logger ?? createLogger({ base: { service: def.name, version: def.version } }));
  const operations = new Map();
  for (const [name, spec] of Object.entries(def.operations)) {
    const handler = handlers[name];
    if (typeof handler !== 'function') throw new TypeError('serve(' + def.name + '): no handler for operation ' + name);
    // Checkers are compiled on an operation's first message: a start compiles none.
    let input;
    let output;
    operations.set(name, {
      name,
      handler,
      get input() { return (input ??= TypeCompiler.Compile(spec.input)); },
      get output() { return validateOutput ? (output ??= TypeCompiler.Compile(spec.output)) : undefined; },
    });
  }
  for (const name of Object.keys(handlers)) {
    if (!operations.has(name)) throw new TypeError('serve(' + def.name + '): handler ' + name + ' is for no operation');
  }
  // Each import is reached through the runner, which asks the host for that import's
  // socket: the isolate names an import, never a path.
  const imports = {};
  for (const [name, dep] of Object.entries(def.imports)) {
    imports[name] = createClient(dep, (op, body) => host.importCall(name, op, body), 'import ' + name + ' (' + dep.name + ')');
  }
  Object.freeze(imports);
  let inFlight = 0;
  const reply = (status, value) => JSON.stringify({ status, body: JSON.stringify(value === undefined ? null : value) });
  const fail = (error) => JSON.stringify({ status: error.status, body: JSON.stringify(error.toJSON()) });
  Object.defineProperty(globalThis, '__shoalDispatch', {
    value: async (opName, text) => {
      const op = operations.get(opName);
      if (op === undefined) {
        return fail(new ServiceError('not-found', def.name + ' has no operation ' + JSON.stringify(opName.slice(0, 200)) + ' (operations: ' + [...operations.keys()].join(', ') + ')'));
      }
      inFlight++;
      try {
        let input;
        try {
          input = text.trim() === '' ? {} : JSON.parse(text);
        } catch (e) {
          throw new ServiceError('invalid', op.name + ': the body is not JSON: ' + e.message, '');
        }
        if (!op.input.Check(input)) {
          const first = op.input.Errors(input).First();
          const field = first?.path ?? '';
          throw new ServiceError('invalid', op.name + ': input ' + (field || '(body)') + ': ' + (first?.message ?? 'does not match the schema'), field);
        }
        const output = await op.handler(input, { imports, signal: neverAborted, log: log.child({ op: op.name }), operation: op.name });
        if (op.output !== undefined && !op.output.Check(output)) {
          const first = op.output.Errors(output).First();
          throw new ServiceError('internal', op.name + ': output ' + (first?.path || '(reply)') + ': ' + (first?.message ?? 'does not match the schema') + ' (the handler is wrong, not the caller)', undefined, { status: 500 });
        }
        return reply(200, output);
      } catch (e) {
        const error = toServiceError(e, op.name);
        if (error.status >= 500) log.error('operation failed', { op: op.name, code: error.code, message: error.message });
        return fail(error);
      } finally {
        inFlight--;
      }
    },
  });
  served = true;
  host.serving();
  log.info('listening in an isolate', { operations: [...operations.keys()], imports: Object.keys(imports) });
  return { socketPath: 'isolate', get inFlight() { return inFlight; }, close: async () => {} };
}
`;

/** Built-ins a service may use that have a real meaning in an isolate (others import, but throw when called). */
export const NODE_SHIMS: Record<string, string> = {
  os: String.raw`
export const hostname = () => globalThis.process.env.HOSTNAME ?? 'isolate';
export const networkInterfaces = () => ({});
export const platform = () => 'linux';
export const EOL = '\n';
export default { hostname, networkInterfaces, platform, EOL };
`,
  crypto: String.raw`
const hostHash$ = globalThis.__shoalHash;
export function createHash(algorithm) {
  const parts = [];
  const h = {
    update(data) { parts.push(typeof data === 'string' ? data : String.fromCharCode(...data)); return h; },
    digest(encoding) { return hostHash$(algorithm, parts, encoding ?? 'hex'); },
  };
  return h;
}
export const randomUUID = () => globalThis.__shoalRandomUUID();
export default { createHash, randomUUID };
`,
};

const shimCache = new Map<string, string>();

/**
 * The module a component gets for a built-in: NODE_SHIMS' few real functions, and every
 * other export of the real module as a function that throws when called (`where` names
 * the kind of component in the message).
 */
export async function builtinShim(spec: string, where: string): Promise<string> {
  const name = spec.replace(/^node:/, '');
  const key = `${name}\0${where}`;
  let code = shimCache.get(key);
  if (code !== undefined) return code;
  code = NODE_SHIMS[name];
  const real = Object.keys((await import(`node:${name}`)) as object).filter((n) => n !== 'default' && /^[A-Za-z_$][\w$]*$/.test(n));
  const lines = [`const no = (what) => function () { throw new Error('node:${name}: ' + what + ' is not available inside ${where}'); };`];
  const have = new Set(code === undefined ? [] : [...code.matchAll(/export (?:const|function) ([A-Za-z_$][\w$]*)/g)].map((m) => m[1]));
  for (const n of real) if (!have.has(n)) lines.push(`export const ${n} = no(${JSON.stringify(n)});`);
  code = `${code ?? 'export default {};'}\n${lines.join('\n')}\n`;
  shimCache.set(key, code);
  return code;
}
