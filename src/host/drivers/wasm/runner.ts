// The wasm runner: the process one component instance lives in (started by launcher.ts,
// never inside the host agent). It waits for one `start` message on its IPC channel with
// the module's bytes and the instance's listening socket, then serves HTTP on that socket:
// `GET /healthz`, and `POST /<op>` → the module's handle(op, body). The host asks it over
// the same channel to capture its state; handle() is synchronous, so a capture always
// falls between two messages.
//
// Loaded under `node --permission` (no file writes, no child processes): it imports only
// Node built-ins and engine.ts.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Server } from 'node:net';
import { WASI } from 'node:wasi';
import { Worker } from 'node:worker_threads';
import { duplexPair } from 'node:stream';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AbiError, activeDataRanges, ComponentInstance, deserializeState, decodeState, encodeState, MemoryLimitError, serializeState } from './engine.ts';
import { loadQuickJs, QUICKJS_WASM, QuickJsComponent, QuickJsExit, type Outcome, type QuickJsLibrary } from './quickjs-engine.ts';
import type { HostToRunner, RunnerToHost } from './runner-protocol.ts';

const MAX_BODY = 10 * 1024 * 1024;

let component: ComponentInstance | QuickJsComponent | undefined;
/** Where QuickJS's packages are (`--quickjs=<node_modules>`: the only other folder this process may read). */
const quickjsDir = process.argv.find((a) => a.startsWith('--quickjs='))?.slice('--quickjs='.length);
/** QuickJS's wrapper and its compiled module, loaded while the runner is a spare. */
let quickjs: { lib: QuickJsLibrary; wasm: WebAssembly.Module } | undefined;
/** [0]: 1 while a call runs; [1]: its start, ms since the runner's clock origin; [2]: the call limit in ms (0: none). */
const callClock = new Int32Array(new SharedArrayBuffer(12));

function send(message: RunnerToHost): void {
  process.send?.(message);
}

/** Tells the host why, then ends the process (the host maps the reason onto the exit event). */
function die(reason: 'oom' | 'crashed' | 'exited', message: string, code = reason === 'oom' ? 137 : 70): void {
  dead = true;
  send({ type: 'exiting', reason, message });
  process.stderr.write(`shoal wasm runner: ${message}\n`);
  // Give the IPC message and the reply a moment to leave; then go.
  setTimeout(() => process.exit(code), 20);
}
let dead = false;

process.on('message', (raw: unknown, handle: unknown) => {
  const message = raw as HostToRunner;
  try {
    switch (message.type) {
      case 'start':
        start(message, handle as Server).catch((e: unknown) => {
          const exit = e instanceof QuickJsExit ? ` (process.exit(${e.code}) while starting)` : '';
          send({ type: 'failed', seq: message.seq, message: `${(e as Error).message}${exit}` });
        });
        return;
      case 'capture': {
        if (!component) throw new Error('capture before start');
        const state = component.capture();
        const bytes = message.compress ? encodeState(state) : serializeState(state);
        send({ type: 'captured', seq: message.seq, state: bytes, memoryBytes: component.memoryBytes, pages: state.pageIndexes.length });
        return;
      }
      case 'stop':
        process.exit(0);
    }
  } catch (e) {
    const seq = 'seq' in message ? message.seq : undefined;
    send({ type: 'failed', seq, message: (e as Error).message });
  }
});
process.on('disconnect', () => process.exit(0)); // the host went away

async function start(message: Extract<HostToRunner, { type: 'start' }>, listener: Server): Promise<void> {
  if (component) throw new Error('this runner serves an instance already');
  const state = message.state === undefined ? undefined : message.stateCompressed ? decodeState(message.state) : deserializeState(Buffer.from(message.state));
  let madePrelude: Uint8Array | undefined;
  if (message.bundle !== undefined) {
    if (quickjsDir === undefined) throw new Error('this runner was started without QuickJS (--quickjs)');
    const { lib, wasm } = (quickjs ??= await loadQuickJsModule(quickjsDir));
    const options = { maxMemoryBytes: message.maxMemoryBytes, env: message.env, log: (text: string) => void process.stdout.write(text) };
    const prelude = message.prelude === undefined ? undefined : deserializeState(Buffer.from(message.prelude));
    const js = state === undefined ? await QuickJsComponent.start(lib, wasm, message.bundle, options, prelude) : await QuickJsComponent.restore(lib, wasm, state, options);
    if (js.madePrelude) madePrelude = serializeState(js.madePrelude);
    component = js;
    // Timers the program set while starting, or that the state holds.
    if (state === undefined) scheduleWake(js.startWake);
    else turn(() => js.poll());
  } else {
    const module = new WebAssembly.Module(message.module);
    const options = { maxMemoryBytes: message.maxMemoryBytes, stdout: 1, stderr: 2, env: message.env, args: ['component'] };
    component = state === undefined ? ComponentInstance.start(module, options) : ComponentInstance.restore(module, options, state, activeDataRanges(message.module));
  }
  Atomics.store(callClock, 2, Math.max(0, Math.min(message.cpuLimitMs, 2 ** 31 - 1)));
  const server = createServer((req, res) => void serveOne(req, res));
  // The listener arrives already listening (Node re-creates the sent server here): its
  // connections go to the HTTP server.
  listener.on('connection', (socket) => server.emit('connection', socket));
  send({ type: 'ready', seq: message.seq, ...(madePrelude ? { prelude: madePrelude } : {}) });
}

async function serveOne(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = (req.url ?? '/').split('?')[0]!;
  if (path === '/healthz') {
    req.resume();
    return reply(res, 200, Buffer.from('ok'), 'text/plain');
  }
  if (req.method !== 'POST') {
    req.resume();
    return reply(res, 405, errorBody('unsupported', `use POST, not ${req.method}`));
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > MAX_BODY) return reply(res, 413, errorBody('too-large', 'the request body is over 10 MiB'));
    chunks.push(c as Buffer);
  }
  const op = decodeURIComponent(path.slice(1));
  const c = component!;
  if (dead) return reply(res, 503, errorBody('unavailable', 'the instance is stopping'));
  if (c instanceof QuickJsComponent) return serveJs(c, op, Buffer.concat(chunks), res);
  let out;
  Atomics.store(callClock, 1, Math.round(performance.now()));
  Atomics.store(callClock, 0, 1);
  try {
    out = c.handle(op, Buffer.concat(chunks));
  } catch (e) {
    Atomics.store(callClock, 0, 0);
    if (e instanceof MemoryLimitError) {
      reply(res, 503, errorBody('unavailable', e.message));
      return die('oom', e.message);
    }
    const message = e instanceof AbiError ? e.message : `the module trapped: ${(e as Error).message}`;
    reply(res, 500, errorBody('internal', message));
    // A trap may leave the instance's memory half-updated: it does not serve again.
    return die('crashed', message);
  }
  Atomics.store(callClock, 0, 0);
  reply(res, out.status, out.body);
}

// ---- A JS component on QuickJS: replies may settle after timers; the runner wakes it for them.

/** Messages whose reply has not settled yet, by call id. */
const waiting = new Map<number, ServerResponse>();
let nextCall = 1;
let wakeTimer: NodeJS.Timeout | undefined;

function serveJs(c: QuickJsComponent, op: string, body: Buffer, res: ServerResponse): void {
  const id = nextCall++;
  waiting.set(id, res);
  turn(() => c.call(id, op, body));
}

/** One turn of the guest under the CPU watchdog, then its outcome: replies, exit, oom, the next wake. */
function turn(run: () => Outcome): void {
  let out: Outcome;
  Atomics.store(callClock, 1, Math.round(performance.now()));
  Atomics.store(callClock, 0, 1);
  try {
    out = run();
  } catch (e) {
    Atomics.store(callClock, 0, 0);
    const message = e instanceof AbiError ? e.message : `QuickJS trapped: ${(e as Error).message}`;
    failWaiting(500, 'internal', message);
    return die('crashed', message);
  }
  Atomics.store(callClock, 0, 0);
  for (const [id, r] of out.replies) {
    const res = waiting.get(id);
    waiting.delete(id);
    if (res) reply(res, r.status, r.body);
  }
  if (out.exit !== null) {
    const message = `the program called process.exit(${out.exit})`;
    failWaiting(503, 'unavailable', message);
    return die(out.exit === 0 ? 'exited' : 'crashed', message, out.exit);
  }
  if (out.oom) {
    failWaiting(503, 'unavailable', 'the component ran out of memory');
    return die('oom', 'the component ran out of memory (QuickJS heap at its limit)');
  }
  scheduleWake(out.wakeInMs);
}

function scheduleWake(ms: number | null): void {
  if (wakeTimer) clearTimeout(wakeTimer);
  wakeTimer = undefined;
  if (ms === null || dead) return;
  const c = component;
  if (!(c instanceof QuickJsComponent)) return;
  wakeTimer = setTimeout(() => {
    wakeTimer = undefined;
    if (!dead) turn(() => c.fire());
  }, ms);
}

function failWaiting(status: number, code: string, message: string): void {
  for (const res of waiting.values()) reply(res, status, errorBody(code, message));
  waiting.clear();
}

function reply(res: ServerResponse, status: number, body: Buffer, type = 'application/json'): void {
  res.writeHead(status, { 'content-type': type, 'content-length': body.length });
  res.end(body);
}

function errorBody(code: string, message: string): Buffer {
  return Buffer.from(JSON.stringify({ error: { code, message } }));
}

/**
 * A call that runs longer than the limit cannot be interrupted from JS (handle() is
 * synchronous), so a watchdog thread ends the whole runner with SIGXCPU, which the
 * driver reports as an exit with reason 'killed'.
 */
function startWatchdog(): Promise<void> {
  const code = `
    const { workerData } = require('node:worker_threads');
    const clock = workerData.clock, origin = workerData.origin;
    setInterval(() => {
      const limit = Atomics.load(clock, 2);
      if (limit === 0 || Atomics.load(clock, 0) !== 1) return;
      const now = Math.round(performance.timeOrigin + performance.now() - origin);
      if (now - Atomics.load(clock, 1) > limit) process.kill(process.pid, 'SIGXCPU');
    }, 10);`;
  const w = new Worker(code, { eval: true, workerData: { clock: callClock, origin: performance.timeOrigin } });
  w.unref();
  return new Promise<void>((resolve) => w.once('online', resolve));
}

async function loadQuickJsModule(dir: string): Promise<{ lib: QuickJsLibrary; wasm: WebAssembly.Module }> {
  return { lib: await loadQuickJs(dir), wasm: new WebAssembly.Module(readFileSync(join(dir, QUICKJS_WASM))) };
}

/**
 * One request through an HTTP server over an in-memory socket pair: the first request a
 * Node process serves compiles its parser and writer paths (tens of ms in a fresh runner),
 * which would otherwise fall on the instance's first message.
 */
async function warmHttp(): Promise<void> {
  const [inside, outside] = duplexPair();
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => reply(res, 200, Buffer.from('{"warm":true}')));
  });
  server.emit('connection', inside);
  const answered = new Promise<void>((resolve) => {
    let text = '';
    outside.on('data', (c: Buffer) => {
      text += c.toString();
      if (text.includes('{"warm":true}')) resolve();
    });
  });
  outside.write('POST /Warm HTTP/1.1\r\nhost: runner\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}');
  await Promise.race([answered, new Promise((r) => setTimeout(r, 1000))]);
  outside.destroy();
  inside.destroy();
  server.close();
}

// Everything slow happens before the runner says it is there: the watchdog thread and
// node:wasi's first use; in a spare also QuickJS (wrapper, compiled module, warm-up) and HTTP.
await startWatchdog();
new WASI({ version: 'preview1' });
// A spare (started ahead of any instance) also has time to warm up HTTP, and QuickJS when
// its driver runs JS bundles.
if (process.argv.includes('--spare')) {
  if (quickjsDir !== undefined && process.argv.includes('--warm-quickjs')) {
    quickjs = await loadQuickJsModule(quickjsDir);
    await QuickJsComponent.warmUp(quickjs.lib, quickjs.wasm);
  }
  await warmHttp();
}
send({ type: 'spawned' });
