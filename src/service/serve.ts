// serve(): the instance side of the contract (DESIGN.md, "Drivers"). HTTP on the Unix
// socket the host passed in (fd 3 with LISTEN_FDS=1: socket activation, so the host never
// connects to a path the instance could replace), or else bound at `$SHOAL_LISTEN` (hosts
// that pass no listener, and tests): `GET /healthz` answers 200 while serving; `POST /<Op>` with a
// JSON body is checked against the operation's input schema, handed to its typed
// handler, and the handler's value (or error) is the JSON reply. SIGTERM drains: stop
// accepting, finish what is in flight, exit 0.
import { chmod, lstat, mkdir, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { dirname } from 'node:path';
import type { TSchema } from '@sinclair/typebox';
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import type { AnyService, InputOf, OperationName, OutputOf } from './define.ts';
import { isServiceDefinition } from './define.ts';
import { createImportClients, type CallOptions, type ImportClients } from './client.ts';
import { ServiceError, toServiceError } from './errors.ts';
import { createLogger, silentLogger, type Logger } from './log.ts';
import { describeOnly, describeTarget } from './describe.ts';

export interface HandlerContext<S extends AnyService> {
  /** A typed client for every import, reached over `$SHOAL_IMPORTS/<name>.sock`; calls default to `signal`. */
  readonly imports: ImportClients<S['imports']>;
  /** Aborted when the caller goes away or the drain deadline passes. */
  readonly signal: AbortSignal;
  readonly log: Logger;
  readonly operation: OperationName<S>;
}

export type Handler<S extends AnyService, Op extends OperationName<S>> = (
  input: InputOf<S, Op>,
  ctx: HandlerContext<S>,
) => OutputOf<S, Op> | Promise<OutputOf<S, Op>>;

/** One handler per operation, each typed by that operation's schemas. */
export type Handlers<S extends AnyService> = { readonly [Op in OperationName<S>]: Handler<S, Op> };

export interface ServeOptions {
  /** An inherited listening socket's descriptor. Default: 3 when LISTEN_FDS >= 1 names it, else none. */
  listenFd?: number;
  /** Socket path to bind when no listener is inherited. Default `$SHOAL_LISTEN`, else /run/shoal/app.sock. */
  listen?: string;
  /** Where the import sockets are. Default `$SHOAL_IMPORTS`, else /run/shoal/imports. */
  importsDir?: string;
  /** Check every reply against the output schema (a failure is a 500). Default: on when NODE_ENV=development or SHOAL_VALIDATE_OUTPUT=1. */
  validateOutput?: boolean;
  /** Largest request body. Default 10 MiB (the provider's limit). */
  maxBodyBytes?: number;
  /** How long SIGTERM waits for in-flight messages before aborting them. Default 10 s. */
  drainTimeoutMs?: number;
  /** Install SIGTERM/SIGINT handlers that drain and exit 0. Default true. */
  handleSignals?: boolean;
  /** Default: JSON lines on stdout. `false`: none. */
  logger?: Logger | false;
}

export interface RunningService {
  /** The bound path, or `fd:<n>` for an inherited listener. */
  readonly socketPath: string;
  /** Messages being handled now. */
  readonly inFlight: number;
  /** Stops accepting, waits for in-flight messages (up to drainTimeoutMs), closes. Idempotent. */
  close(): Promise<void>;
}

const DEFAULT_LISTEN = '/run/shoal/app.sock';
const DEFAULT_IMPORTS = '/run/shoal/imports';

interface CompiledOperation {
  name: string;
  handler: (input: unknown, ctx: HandlerContext<AnyService>) => unknown;
  input: TypeCheck<TSchema>;
  output: TypeCheck<TSchema> | undefined;
}

export async function serve<S extends AnyService>(def: S, handlers: NoInfer<Handlers<S>>, options: ServeOptions = {}): Promise<RunningService> {
  if (!isServiceDefinition(def)) throw new TypeError('serve: the first argument must be a definition made by defineService');
  const listenFd = options.listenFd ?? (options.listen === undefined ? inheritedListenFd() : undefined);
  const socketPath = listenFd !== undefined ? `fd:${listenFd}` : (options.listen ?? process.env.SHOAL_LISTEN ?? DEFAULT_LISTEN);
  const importsDir = options.importsDir ?? process.env.SHOAL_IMPORTS ?? DEFAULT_IMPORTS;
  const validateOutput = options.validateOutput ?? (process.env.NODE_ENV === 'development' || process.env.SHOAL_VALIDATE_OUTPUT === '1');
  const maxBodyBytes = options.maxBodyBytes ?? 10 * 1024 * 1024;
  const drainTimeoutMs = options.drainTimeoutMs ?? 10_000;
  const log = options.logger === false ? silentLogger : (options.logger ?? createLogger({ base: { service: def.name, version: def.version } }));

  const operations = new Map<string, CompiledOperation>();
  for (const [name, spec] of Object.entries(def.operations)) {
    const handler = (handlers as Record<string, unknown>)[name];
    if (typeof handler !== 'function') throw new TypeError(`serve(${def.name}): no handler for operation ${name}`);
    operations.set(name, {
      name,
      handler: handler as CompiledOperation['handler'],
      input: TypeCompiler.Compile(spec.input),
      output: validateOutput ? TypeCompiler.Compile(spec.output) : undefined,
    });
  }
  for (const name of Object.keys(handlers)) {
    if (!operations.has(name)) throw new TypeError(`serve(${def.name}): handler ${name} is for no operation (operations: ${[...operations.keys()].join(', ')})`);
  }

  // `shoal deploy` reads the definition from this module without serving (describe.ts).
  const describeTo = describeTarget();
  if (describeTo !== undefined) return describeOnly(def, describeTo);

  const imports = createImportClients(def.imports, importsDir);
  const importNames = Object.keys(def.imports);
  const inFlight = new Set<AbortController>();
  let draining = false;
  let drained: (() => void) | undefined;

  const server = createServer((req, res) => {
    if (draining) res.setHeader('connection', 'close');
    void handle(req, res);
  });
  // No request may wait forever for its body; handlers get as long as they need.
  server.requestTimeout = 60_000;
  server.keepAliveTimeout = 65_000;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    if (path === '/healthz') {
      if (draining) return replyError(res, new ServiceError('unavailable', `${def.name} is shutting down`, undefined, { status: 503 }));
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 });
      res.end('ok');
      return;
    }
    const op = operations.get(path.slice(1));
    if (op === undefined) {
      req.resume();
      return replyError(res, new ServiceError('not-found', `${def.name} has no operation ${JSON.stringify(path.slice(1, 200))} (operations: ${[...operations.keys()].join(', ')})`));
    }
    if (req.method !== 'POST') {
      req.resume();
      res.setHeader('allow', 'POST');
      return replyError(res, new ServiceError('unsupported', `${op.name}: use POST, not ${req.method}`, undefined, { status: 405 }));
    }

    const controller = new AbortController();
    inFlight.add(controller);
    // The caller hung up before its reply: whatever the handler is waiting on may stop.
    res.on('close', () => {
      if (!res.writableFinished) controller.abort(new ServiceError('unavailable', `${op.name}: the caller went away`, undefined, { status: 499 }));
      inFlight.delete(controller);
      if (draining && inFlight.size === 0) drained?.();
    });
    try {
      const input = await readJson(req, maxBodyBytes, op.name);
      if (!op.input.Check(input)) {
        const first = op.input.Errors(input).First();
        const field = first?.path ?? '';
        throw new ServiceError('invalid', `${op.name}: input ${field || '(body)'}: ${first?.message ?? 'does not match the schema'}`, field);
      }
      const ctx: HandlerContext<AnyService> = {
        imports: importNames.length === 0 ? imports.clients : bindSignal(imports.clients, importNames, controller.signal),
        signal: controller.signal,
        log: log.child({ op: op.name }),
        operation: op.name,
      };
      const output = await op.handler(input, ctx);
      if (op.output !== undefined && !op.output.Check(output)) {
        const first = op.output.Errors(output).First();
        throw new ServiceError('internal', `${op.name}: output ${first?.path || '(reply)'}: ${first?.message ?? 'does not match the schema'} (the handler is wrong, not the caller)`, undefined, {
          status: 500,
        });
      }
      const body = JSON.stringify(output === undefined ? null : output);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    } catch (e) {
      const error = toServiceError(e, op.name);
      if (error.status >= 500) log.error('operation failed', { op: op.name, code: error.code, err: e instanceof Error ? e : undefined, message: error.message });
      if (req.readableEnded) replyError(res, error);
      else {
        // The body was not read to its end: the connection cannot be reused.
        res.setHeader('connection', 'close');
        replyError(res, error);
        req.resume();
      }
    } finally {
      if (draining) server.closeIdleConnections();
    }
  }

  if (listenFd === undefined) {
    await mkdir(dirname(socketPath), { recursive: true });
    await removeStaleSocket(socketPath);
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const listening = (): void => {
      server.off('error', reject);
      resolve();
    };
    if (listenFd !== undefined) server.listen({ fd: listenFd }, listening);
    else server.listen(socketPath, listening);
  });
  // The service may run as another uid than whoever connects (the host's forwarder).
  if (listenFd === undefined) await chmod(socketPath, 0o666);

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      draining = true;
      const serverClosed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      if (inFlight.size > 0) {
        log.info('draining', { inFlight: inFlight.size });
        const done = new Promise<void>((resolve) => (drained = resolve));
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), drainTimeoutMs)));
        const timedOut = await Promise.race([done.then(() => false), late]);
        clearTimeout(timer);
        if (timedOut) {
          log.warn('drain deadline passed; aborting what is left', { inFlight: inFlight.size });
          for (const c of inFlight) c.abort(new ServiceError('unavailable', `${def.name} is shutting down`, undefined, { status: 503 }));
          // Give the aborted handlers a moment to answer, then cut what remains.
          await Promise.race([done, new Promise((r) => setTimeout(r, 200))]);
        }
      }
      server.closeAllConnections();
      await serverClosed;
      imports.close();
      // An inherited listener's path belongs to the host.
      if (listenFd === undefined) await rm(socketPath, { force: true });
      log.info('stopped');
    })();
    return closing;
  };

  if (options.handleSignals ?? true) {
    const onSignal = (signal: NodeJS.Signals) => {
      log.info(`${signal}: shutting down`);
      close().then(
        () => process.exit(0),
        (e: unknown) => {
          log.error('shutdown failed', { err: e instanceof Error ? e : undefined });
          process.exit(1);
        },
      );
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  }
  // Announced only once SIGTERM is handled: a supervisor that reads "listening" and at once
  // sends SIGTERM must get the drain and exit 0, not the default death by signal.
  log.info(`listening on ${socketPath}`, { operations: [...operations.keys()], imports: importNames });

  return {
    socketPath,
    get inFlight() {
      return inFlight.size;
    },
    close,
  };
}

/**
 * fd 3 when the host passed a listener (LISTEN_FDS >= 1 and, when set, LISTEN_PID is us).
 * The variables are removed so that a child of the service does not take them as its own.
 */
function inheritedListenFd(): number | undefined {
  const count = Number(process.env.LISTEN_FDS ?? '0');
  const pid = process.env.LISTEN_PID;
  const ours = Number.isInteger(count) && count >= 1 && (pid === undefined || Number(pid) === process.pid);
  delete process.env.LISTEN_FDS;
  delete process.env.LISTEN_PID;
  delete process.env.LISTEN_FDNAMES;
  return ours ? 3 : undefined;
}

function replyError(res: ServerResponse, error: ServiceError): void {
  const body = JSON.stringify(error.toJSON());
  res.writeHead(error.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function readJson(req: IncomingMessage, limit: number, op: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (c: Buffer) => {
      if (failed) return;
      size += c.length;
      if (size > limit) {
        failed = true;
        reject(new ServiceError('too-large', `${op}: the body is larger than ${limit} bytes`));
      } else chunks.push(c);
    });
    req.on('end', () => {
      if (failed) return;
      const text = Buffer.concat(chunks).toString('utf8');
      if (text.trim() === '') return resolve({}); // `curl -X POST .../Inspect` with no body
      try {
        resolve(JSON.parse(text));
      } catch (e) {
        reject(new ServiceError('invalid', `${op}: the body is not JSON: ${(e as Error).message}`, ''));
      }
    });
    req.on('error', (e) => {
      if (!failed) reject(e);
    });
  });
}

/** Each import client with `signal` as its default, made on first use. */
function bindSignal(clients: Record<string, unknown>, names: string[], signal: AbortSignal): never {
  const bound: Record<string, unknown> = {};
  for (const name of names) {
    Object.defineProperty(bound, name, {
      enumerable: true,
      configurable: true,
      get() {
        const base = clients[name] as Record<string, (input: unknown, o?: CallOptions) => Promise<unknown>>;
        const client: Record<string, unknown> = {};
        for (const [op, call] of Object.entries(base)) {
          client[op] = (input: unknown, o?: CallOptions) => call(input, { signal: o?.signal ? AbortSignal.any([o.signal, signal]) : signal });
        }
        Object.defineProperty(bound, name, { value: client, enumerable: true });
        return client;
      },
    });
  }
  return bound as never;
}

async function removeStaleSocket(path: string): Promise<void> {
  let stat;
  try {
    stat = await lstat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return; // nothing there: the usual case
    throw e;
  }
  if (!stat.isSocket()) throw new Error(`serve: ${path} exists and is not a socket; refusing to replace it`);
  // A socket left by an earlier run makes listen fail with EADDRINUSE.
  await rm(path, { force: true });
}
