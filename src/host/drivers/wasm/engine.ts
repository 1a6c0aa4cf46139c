// The wasm engine: one WASI component instance behind Shoal's component ABI
// (docs/components.md), and its live state (capture, restore, fork). It runs inside the
// runner process (runner.ts), never in the host agent; it imports only Node built-ins so the
// runner can load it under `node --permission` with nothing else readable.
//
// The ABI a module exports:
//   memory                        its linear memory
//   alloc(len: i32) -> i32        room for `len` input bytes
//   handle(op_ptr, op_len, body_ptr, body_len: i32) -> i64
//                                 serves one operation; the reply is JSON at
//                                 (result >> 32, result & 0xffffffff)
//   _initialize()                 optional (a WASI reactor), run once at a fresh start,
//                                 never after a restore or fork
//   exported globals              captured with the memory
// Imports: only wasi_snapshot_preview1, with no preopens (no file system): fd 1 and 2 go to
// the instance log, stdin is empty.
import { WASI } from 'node:wasi';
import { activeDataRanges, type ByteRange } from './data-segments.ts';
import { zstdCompressSync, zstdDecompressSync, constants as zlibConstants } from 'node:zlib';

export const WASM_PAGE = 65536;
/** Captures copy memory in 4 KiB pages and skip the all-zero ones. */
export const STATE_PAGE = 4096;
export const STATE_MEDIA_TYPE = 'application/vnd.shoal.state.wasm.v1+zstd';
const STATE_MAGIC = 'shoal-wasm-state/1';
const ZERO_PAGE = Buffer.alloc(STATE_PAGE);
const WASI_MODULE = 'wasi_snapshot_preview1';

export interface EngineOptions {
  /** Largest linear memory in bytes; growing past it fails inside the module, an instance over it is stopped. */
  maxMemoryBytes: number;
  /** Descriptors fd_write(1) and fd_write(2) reach (the instance log). */
  stdout: number;
  stderr: number;
  /** Default 0 (the runner's stdin is /dev/null). */
  stdin?: number;
  args?: string[];
  env?: Record<string, string>;
}

/** One reply: JSON bytes and the HTTP status the runner answers with. */
export interface Reply {
  status: number;
  body: Buffer;
}

/** A captured state before compression: exported globals plus the non-zero 4 KiB pages of memory. */
export interface RawState {
  /** Memory size in 64 KiB pages. */
  memoryPages: number;
  globals: Array<{ name: string; kind: 'number' | 'bigint'; value: string }>;
  /** Indexes of the captured 4 KiB pages, ascending. */
  pageIndexes: Uint32Array;
  /** Their bytes, STATE_PAGE each, in the order of pageIndexes. */
  pageData: Buffer;
}

interface AbiExports {
  memory: WebAssembly.Memory;
  alloc: (len: number) => number;
  handle: (opPtr: number, opLen: number, bodyPtr: number, bodyLen: number) => bigint;
  _initialize?: () => void;
}

export class AbiError extends Error {}

/** Refuses a module that does not follow the ABI or imports anything beyond WASI. */
export function checkModule(module: WebAssembly.Module): void {
  const exports = new Map(WebAssembly.Module.exports(module).map((e) => [e.name, e.kind]));
  const want: Array<[string, string]> = [
    ['memory', 'memory'],
    ['alloc', 'function'],
    ['handle', 'function'],
  ];
  for (const [name, kind] of want) {
    if (exports.get(name) !== kind) throw new AbiError(`the module does not export ${kind} ${name} (docs/components.md: the component ABI)`);
  }
  for (const imp of WebAssembly.Module.imports(module)) {
    if (imp.module !== WASI_MODULE) throw new AbiError(`the module imports ${imp.module}.${imp.name}; components may import only ${WASI_MODULE}`);
  }
}

export class ComponentInstance {
  readonly module: WebAssembly.Module;
  private readonly exports: AbiExports;
  private readonly instance: WebAssembly.Instance;
  private readonly maxMemoryBytes: number;

  private constructor(module: WebAssembly.Module, instance: WebAssembly.Instance, maxMemoryBytes: number) {
    this.module = module;
    this.instance = instance;
    this.exports = instance.exports as unknown as AbiExports;
    this.maxMemoryBytes = maxMemoryBytes;
  }

  /** A fresh instance: instantiate, then `_initialize` once. */
  static start(module: WebAssembly.Module, options: EngineOptions): ComponentInstance {
    const { instance, wasi } = instantiate(module, options);
    const c = new ComponentInstance(module, instance, options.maxMemoryBytes);
    c.checkMemory();
    // node:wasi's initialize() runs _initialize when the module has it.
    wasi.initialize(instance);
    return c;
  }

  /** An instance that continues from `state`: its data segments are overwritten, `_initialize` is not run. */
  static restore(module: WebAssembly.Module, options: EngineOptions, state: RawState, dataRanges?: ByteRange[]): ComponentInstance {
    if (state.memoryPages * WASM_PAGE > options.maxMemoryBytes) {
      throw new AbiError(`the state's memory (${state.memoryPages * WASM_PAGE} bytes) is over this instance's limit (${options.maxMemoryBytes} bytes)`);
    }
    const { instance, wasi } = instantiate(module, options);
    wasi.finalizeBindings(instance);
    const c = new ComponentInstance(module, instance, options.maxMemoryBytes);
    c.load(state, dataRanges);
    return c;
  }

  get memoryBytes(): number {
    return this.exports.memory.buffer.byteLength;
  }

  /** Serves one operation. Throws AbiError when the module breaks the ABI or traps. */
  handle(op: string, body: Uint8Array): Reply {
    const opBytes = Buffer.from(op, 'utf8');
    const opPtr = this.write(opBytes);
    const bodyPtr = this.write(body);
    const packed = this.exports.handle(opPtr, opBytes.length, bodyPtr, body.length);
    this.checkMemory();
    const ptr = Number(BigInt.asUintN(64, packed) >> 32n);
    const len = Number(BigInt.asUintN(32, packed));
    const mem = this.exports.memory.buffer;
    if (ptr + len > mem.byteLength) throw new AbiError(`handle returned a reply outside memory (${ptr}+${len})`);
    const text = Buffer.from(mem, ptr, len);
    return toReply(Buffer.from(text)); // a copy: memory may move on the next call
  }

  /** Exported globals and the non-zero 4 KiB pages of memory (call between messages). */
  capture(): RawState {
    const globals: RawState['globals'] = [];
    for (const [name, value] of Object.entries(this.instance.exports)) {
      if (!(value instanceof WebAssembly.Global)) continue;
      const v: unknown = value.value;
      if (typeof v === 'bigint') globals.push({ name, kind: 'bigint', value: v.toString() });
      else if (typeof v === 'number') globals.push({ name, kind: 'number', value: Object.is(v, -0) ? '-0' : String(v) });
      // reference-typed globals are not captured (see docs/components.md)
    }
    const mem = Buffer.from(this.exports.memory.buffer);
    const indexes = nonZeroPages(mem, 0, mem.length);
    const data = Buffer.allocUnsafe(indexes.length * STATE_PAGE);
    for (let i = 0; i < indexes.length; i++) mem.copy(data, i * STATE_PAGE, indexes[i]! * STATE_PAGE, (indexes[i]! + 1) * STATE_PAGE);
    return { memoryPages: mem.length / WASM_PAGE, globals, pageIndexes: indexes, pageData: data };
  }

  /** Over its limit (a module whose declared maximum is above it): the runner stops the instance as out of memory. */
  overLimit(): boolean {
    return this.exports.memory.buffer.byteLength > this.maxMemoryBytes;
  }

  private checkMemory(): void {
    if (this.overLimit()) throw new MemoryLimitError(`linear memory is ${this.memoryBytes} bytes, over the limit of ${this.maxMemoryBytes}`);
  }

  private write(bytes: Uint8Array): number {
    if (bytes.length === 0) return 0;
    const ptr = this.exports.alloc(bytes.length) >>> 0;
    const mem = this.exports.memory.buffer;
    if (ptr === 0 || ptr + bytes.length > mem.byteLength) throw new AbiError(`alloc(${bytes.length}) returned ${ptr}, outside memory`);
    new Uint8Array(mem, ptr, bytes.length).set(bytes);
    return ptr;
  }

  private load(state: RawState, dataRanges: ByteRange[] | undefined): void {
    const memory = this.exports.memory;
    const have = memory.buffer.byteLength / WASM_PAGE;
    // Data segments wrote into the fresh memory; what the state does not hold was zero
    // then. Zero what they wrote (known from the binary), else scan every page.
    const fresh = Buffer.from(memory.buffer);
    if (dataRanges) for (const r of dataRanges) fresh.fill(0, Math.min(r.start, fresh.length), Math.min(r.end, fresh.length));
    else for (const page of nonZeroPages(fresh, 0, fresh.length)) fresh.fill(0, page * STATE_PAGE, (page + 1) * STATE_PAGE);
    if (state.memoryPages > have) memory.grow(state.memoryPages - have);
    const mem = Buffer.from(memory.buffer);
    if (mem.length !== state.memoryPages * WASM_PAGE) throw new AbiError(`the state's memory is ${state.memoryPages} pages, the module's ${mem.length / WASM_PAGE}`);
    for (let i = 0; i < state.pageIndexes.length; i++) {
      state.pageData.copy(mem, state.pageIndexes[i]! * STATE_PAGE, i * STATE_PAGE, (i + 1) * STATE_PAGE);
    }
    const exported = this.instance.exports;
    for (const g of state.globals) {
      const global = exported[g.name];
      if (!(global instanceof WebAssembly.Global)) throw new AbiError(`the state has global ${g.name}, which the module does not export`);
      const value = g.kind === 'bigint' ? BigInt(g.value) : Number(g.value);
      if (Object.is(global.value, value)) continue; // immutable globals stay as they were
      global.value = value;
    }
  }
}

export class MemoryLimitError extends Error {}

export { activeDataRanges } from './data-segments.ts';

function instantiate(module: WebAssembly.Module, options: EngineOptions): { instance: WebAssembly.Instance; wasi: WASI } {
  checkModule(module);
  const wasi = new WASI({
    version: 'preview1',
    args: options.args ?? ['component'],
    env: options.env ?? {},
    preopens: {},
    stdin: options.stdin ?? 0, // the runner's fd 0 is /dev/null
    stdout: options.stdout,
    stderr: options.stderr,
    returnOnExit: true,
  });
  const instance = new WebAssembly.Instance(module, wasi.getImportObject() as WebAssembly.Imports);
  return { instance, wasi };
}

/** Indexes of the STATE_PAGE pages in [from, to) holding any non-zero byte (memcmp against a zero page). */
export function nonZeroPages(mem: Buffer, from: number, to: number): Uint32Array {
  const out: number[] = [];
  for (let off = from; off < to; off += STATE_PAGE) {
    if (mem.compare(ZERO_PAGE, 0, STATE_PAGE, off, off + STATE_PAGE) !== 0) out.push(off / STATE_PAGE);
  }
  return Uint32Array.from(out);
}

const STATUS_OF: Record<string, number> = { invalid: 400, 'not-found': 404, conflict: 409, unsupported: 405, unavailable: 503 };

/** A reply `{"error":{"code","message"}}` gets the code's status; anything else is 200. */
function toReply(body: Buffer): Reply {
  if (body.length > 9 && body[0] === 0x7b && body.subarray(0, 12).toString().startsWith('{"error":')) {
    try {
      const parsed = JSON.parse(body.toString('utf8')) as { error?: { code?: unknown } };
      const code = typeof parsed.error?.code === 'string' ? parsed.error.code : 'internal';
      return { status: STATUS_OF[code] ?? 500, body };
    } catch {
      // not JSON after all: passed on as it is
    }
  }
  return { status: 200, body };
}

// ---- The state's bytes: a header, the page indexes, the pages; zstd over all of it ----

export function encodeState(state: RawState, level = 1): Buffer {
  return zstdCompressSync(serializeState(state), { params: { [zlibConstants.ZSTD_c_compressionLevel]: level } });
}

export function decodeState(bytes: Uint8Array): RawState {
  return deserializeState(zstdDecompressSync(bytes));
}

/** Uncompressed, for a fork between two runners on one host. */
export function serializeState(state: RawState): Buffer {
  const header = Buffer.from(JSON.stringify({ magic: STATE_MAGIC, memoryPages: state.memoryPages, globals: state.globals, pages: state.pageIndexes.length }));
  const out = Buffer.allocUnsafe(4 + header.length + state.pageIndexes.byteLength + state.pageData.length);
  out.writeUInt32LE(header.length, 0);
  header.copy(out, 4);
  let off = 4 + header.length;
  for (const i of state.pageIndexes) {
    out.writeUInt32LE(i, off);
    off += 4;
  }
  state.pageData.copy(out, off);
  return out;
}

export function deserializeState(buf: Buffer): RawState {
  if (buf.length < 4) throw new AbiError('the state is truncated');
  const headerLen = buf.readUInt32LE(0);
  let header: { magic?: unknown; memoryPages?: unknown; globals?: unknown; pages?: unknown };
  try {
    header = JSON.parse(buf.subarray(4, 4 + headerLen).toString('utf8')) as typeof header;
  } catch {
    throw new AbiError('the state has no readable header');
  }
  if (header.magic !== STATE_MAGIC) throw new AbiError(`the state is not a ${STATE_MAGIC} state`);
  const pages = Number(header.pages);
  const memoryPages = Number(header.memoryPages);
  if (!Number.isInteger(pages) || !Number.isInteger(memoryPages) || pages < 0 || pages > (memoryPages * WASM_PAGE) / STATE_PAGE) throw new AbiError('the state header is inconsistent');
  let off = 4 + headerLen;
  if (buf.length !== off + pages * 4 + pages * STATE_PAGE) throw new AbiError('the state is truncated or has trailing bytes');
  const indexes = new Uint32Array(pages);
  for (let i = 0; i < pages; i++) {
    indexes[i] = buf.readUInt32LE(off);
    if (indexes[i]! >= (memoryPages * WASM_PAGE) / STATE_PAGE) throw new AbiError('the state names a page outside its memory');
    off += 4;
  }
  const globals = Array.isArray(header.globals) ? (header.globals as RawState['globals']) : [];
  return { memoryPages, globals, pageIndexes: indexes, pageData: buf.subarray(off) };
}
