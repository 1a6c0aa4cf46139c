// Typed clients: one method per operation of a definition, `Op(input) → Promise<output>`.
// Inside an instance, an import is reached over `$SHOAL_IMPORTS/<name>.sock` (the host's
// forwarder to whatever endpoint the farm bound it to); outside, `connect()` calls a URL
// such as the provider's `/s/<service>`. A peer's error reply is raised as a ServiceError
// carrying the peer's code, field and status.
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import type { AnyService, ImportMap, InputOf, OperationName, OutputOf } from './define.ts';
import { fromWire, ServiceError } from './errors.ts';

export interface CallOptions {
  /** Abandons the call (the request is destroyed); the promise rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** `client.Op(input)` for every operation of `S`. */
export type Client<S extends AnyService> = {
  readonly [Op in OperationName<S>]: (input: InputOf<S, Op>, options?: CallOptions) => Promise<OutputOf<S, Op>>;
};

/** One client per import, by import name. */
export type ImportClients<Imports extends ImportMap> = { readonly [Name in keyof Imports]: Client<Imports[Name]> };

/** Sends one operation's JSON body; resolves with the reply's status and text. */
export type Transport = (operation: string, body: string, signal: AbortSignal | undefined) => Promise<{ status: number; text: string }>;

/** A client over any transport (the socket and HTTP clients below are two). */
export function createClient<S extends AnyService>(def: S, transport: Transport, describe: string): Client<S> {
  const client: Record<string, (input: unknown, options?: CallOptions) => Promise<unknown>> = {};
  for (const op of Object.keys(def.operations)) {
    client[op] = async (input, options) => {
      const body = JSON.stringify(input ?? {});
      let reply: { status: number; text: string };
      try {
        reply = await transport(op, body, options?.signal);
      } catch (e) {
        if (options?.signal?.aborted) throw options.signal.reason;
        if (e instanceof ServiceError) throw e;
        const code = (e as NodeJS.ErrnoException).code;
        throw new ServiceError('unavailable', `${describe}: ${op}: cannot reach it: ${code ?? (e as Error).message}`, undefined, { status: 503, cause: e });
      }
      if (reply.status < 200 || reply.status > 299) throw fromWire(reply.status, reply.text, `${describe}: ${op}`);
      try {
        return reply.text === '' ? undefined : JSON.parse(reply.text);
      } catch (e) {
        throw new ServiceError('internal', `${describe}: ${op}: the reply is not JSON: ${reply.text.slice(0, 200)}`, undefined, { status: 502, cause: e });
      }
    };
  }
  return Object.freeze(client) as Client<S>;
}

/** HTTP over a Unix socket, with a keep-alive agent of its own. */
export function socketTransport(socketPath: string, agent: Agent, headers: Record<string, string> = {}): Transport {
  return (operation, body, signal) =>
    new Promise((resolve, reject) => {
      const req = request(
        {
          socketPath,
          agent,
          method: 'POST',
          path: `/${operation}`,
          headers: { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
          ...(signal === undefined ? {} : { signal }),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(body);
    });
}

/** The clients of a definition's imports, each over `<importsDir>/<name>.sock`. */
export function createImportClients<Imports extends ImportMap>(
  imports: Imports,
  importsDir: string,
): { clients: ImportClients<Imports>; close(): void } {
  const agents: Agent[] = [];
  const clients: Record<string, unknown> = {};
  for (const [name, dep] of Object.entries(imports)) {
    // One connection pool per import; idle connections are kept for the next call.
    const agent = new Agent({ keepAlive: true, maxSockets: 256 });
    agents.push(agent);
    clients[name] = createClient(dep, socketTransport(join(importsDir, `${name}.sock`), agent), `import ${name} (${dep.name})`);
  }
  return {
    clients: Object.freeze(clients) as ImportClients<Imports>,
    close: () => agents.forEach((a) => a.destroy()),
  };
}

export interface ConnectOptions {
  /** Where operations are: `POST <url>/<Op>`, e.g. `http://127.0.0.1:7070/s/echo`. */
  url: string;
  /** Sent on every call (authorization, …). */
  headers?: Record<string, string>;
}

/** A typed client for a service reached over HTTP, from outside any instance. */
export function connect<S extends AnyService>(def: S, options: ConnectOptions): Client<S> {
  let base: URL;
  try {
    base = new URL(options.url);
  } catch {
    throw new ServiceError('invalid', `connect: url ${JSON.stringify(options.url)} is not a URL`, 'url');
  }
  if (base.protocol !== 'http:' && base.protocol !== 'https:') {
    throw new ServiceError('invalid', `connect: url scheme ${base.protocol} is not supported (http: or https:)`, 'url');
  }
  const prefix = base.href.replace(/\/+$/, '');
  const headers = { ...options.headers, 'content-type': 'application/json' };
  const transport: Transport = async (operation, body, signal) => {
    const res = await fetch(`${prefix}/${operation}`, { method: 'POST', headers, body, ...(signal === undefined ? {} : { signal }) });
    return { status: res.status, text: await res.text() };
  };
  return createClient(def, transport, `${def.name} at ${prefix}`);
}
