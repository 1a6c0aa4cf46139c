// Import sockets (Baltic's import forwarders): for each import in a deployment plan the host
// puts `<dir>/<name>.sock` beside the instance; each is an HTTP server that relays every
// request to the one endpoint the import was bound to, adding that binding's route token.
// An instance has no network of its own, so these sockets are all it can reach.
//
//   request on <name>.sock:   <method> /<rest>?<query>
//   relayed to:               <method> <url's path, without its trailing slash>/<rest>?<query>
//                             with x-shoal-route: <token> and the binding's headers
//
// The directory is the host's (instances see it read-only): the host lists and unlinks
// there, so a directory an instance could swap (a symlink, or one others may write) is
// refused rather than followed.
//
// Requests whose path could climb out of the bound URL's path (dot segments, also
// percent-encoded, or an absolute-form target) are refused with 400.

import { createServer, validateHeaderName, validateHeaderValue, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { hardenServer } from '../../http/index.ts';
import { chmod, chown, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ShoalError } from '../../protocol/index.ts';
import { closeServer, createUpstream, relay, replyError, readRequestHead, ROUTE_HEADER, type Upstream } from '../../http/index.ts';
import { assertHostOwnedDir, removeStaleSocket } from '../drivers/shared/listener.ts';

export interface ImportBinding {
  /** The import's name; the socket is `<dir>/<name>.sock`. */
  name: string;
  /** Where it leads, e.g. a host forwarder `http://127.0.0.1:PORT/i/` or a provider URL. */
  url: string;
  /** Sent as x-shoal-route on every request. */
  token?: string;
  /** Extra headers sent on every request (they replace the instance's own of that name). */
  headers?: Record<string, string>;
}

export interface ImportSocketsOptions {
  /** Owner of the socket files (the service's uid/gid); the mode is 0666 either way. */
  uid?: number;
  gid?: number;
  /** Longest the bound endpoint may stay silent, before or during its reply. Default 60 s. */
  timeoutMs?: number;
}

export interface ImportSockets {
  /** name → socket path. */
  sockets: Record<string, string>;
  /** Stops the servers and removes the socket files. */
  close(): Promise<void>;
}

export const IMPORT_NAME = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;
/** sockaddr_un.sun_path is 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH_BYTES = 107;
const DEFAULT_TIMEOUT_MS = 60_000;

interface Prepared {
  binding: ImportBinding;
  socketPath: string;
  url: URL;
  basePath: string;
  upstream: Upstream;
  drop: Set<string>;
  extra: string[];
}

export async function openImportSockets(dir: string, bindings: ImportBinding[], options: ImportSocketsOptions = {}): Promise<ImportSockets> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const prepared = bindings.map((binding, i) => prepare(dir, binding, i, timeoutMs));
  const seen = new Set<string>();
  prepared.forEach((p, i) => {
    if (seen.has(p.binding.name)) throw new ShoalError('conflict', `import ${p.binding.name} is bound twice`, { field: `bindings[${i}].name` });
    seen.add(p.binding.name);
  });

  await mkdir(dir, { recursive: true, mode: 0o755 });
  await assertHostOwnedDir(dir);
  const opened: Array<{ server: Server; prepared: Prepared }> = [];
  const closeAll = async (): Promise<void> => {
    await Promise.all(
      opened.map(async ({ server, prepared: p }) => {
        await closeServer(server, async () => p.upstream.destroy());
        await rm(p.socketPath, { force: true });
      }),
    );
    opened.length = 0;
  };
  try {
    for (const p of prepared) {
      await removeStaleSocket(p.socketPath, 'dir');
      const server = hardenServer(createServer((req, res) => handle(p, req, res)));
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(p.socketPath, () => {
          server.off('error', reject);
          resolve();
        });
      });
      opened.push({ server, prepared: p });
      // 0666: the service runs as another uid (65534) and must be able to connect.
      await chmod(p.socketPath, 0o666);
      if (options.uid !== undefined || options.gid !== undefined) await chown(p.socketPath, options.uid ?? -1, options.gid ?? -1);
    }
  } catch (e) {
    await closeAll();
    throw e;
  }
  return { sockets: Object.fromEntries(prepared.map((p) => [p.binding.name, p.socketPath])), close: closeAll };
}

function prepare(dir: string, binding: ImportBinding, i: number, timeoutMs: number): Prepared {
  const field = `bindings[${i}]`;
  if (typeof binding.name !== 'string' || !IMPORT_NAME.test(binding.name)) {
    throw new ShoalError('invalid', `import name ${JSON.stringify(binding.name)} is not allowed: it must match ${IMPORT_NAME.source}`, { field: `${field}.name` });
  }
  const socketPath = join(dir, `${binding.name}.sock`);
  const length = Buffer.byteLength(socketPath);
  if (length > MAX_SOCKET_PATH_BYTES) {
    throw new ShoalError('invalid', `import socket path ${socketPath} is ${length} bytes; Unix socket paths must be under 108 bytes (use a shorter directory or import name)`, {
      field: `${field}.name`,
    });
  }
  let url: URL;
  try {
    url = new URL(binding.url);
  } catch {
    throw new ShoalError('invalid', `import ${binding.name}: url ${JSON.stringify(binding.url)} is not a URL`, { field: `${field}.url` });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ShoalError('unsupported', `import ${binding.name}: url scheme ${url.protocol} is not supported (http: or https:)`, { field: `${field}.url` });
  }
  if (url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    throw new ShoalError('invalid', `import ${binding.name}: url must not carry a query, fragment or credentials (use headers)`, { field: `${field}.url` });
  }

  // The instance may not set these itself: the binding decides where and as whom it calls.
  const drop = new Set(['host', ROUTE_HEADER]);
  const extra = ['host', url.host];
  if (binding.token !== undefined) {
    validateHeaderValue(ROUTE_HEADER, binding.token);
    extra.push(ROUTE_HEADER, binding.token);
  }
  for (const [name, value] of Object.entries(binding.headers ?? {})) {
    try {
      validateHeaderName(name);
      validateHeaderValue(name, value);
    } catch (e) {
      throw new ShoalError('invalid', `import ${binding.name}: header ${JSON.stringify(name)} is not a valid HTTP header`, { field: `${field}.headers`, cause: e });
    }
    drop.add(name.toLowerCase());
    extra.push(name, value);
  }
  return { binding, socketPath, url, basePath: url.pathname.replace(/\/+$/, ''), upstream: createUpstream({ origin: url.origin, timeoutMs }), drop, extra };
}

function handle(p: Prepared, req: IncomingMessage, res: ServerResponse): void {
  const target = req.url ?? '';
  if (!staysInside(target)) {
    replyError(res, 400, 'invalid', 'bad-path', `import ${p.binding.name}: request path ${JSON.stringify(target.slice(0, 200))} is refused (it must start with / and have no . or .. segments)`);
    return;
  }
  const head = readRequestHead(req.rawHeaders, p.drop);
  head.headers.push(...p.extra);
  relay(req, res, {
    upstream: p.upstream,
    method: req.method!,
    path: p.basePath + target,
    head,
    maxBodyBytes: Number.POSITIVE_INFINITY, // the bound endpoint enforces its own limit
    replyHeaders: undefined,
    untrusted: false, // the bound endpoint is a host's forwarder or a provider: its marks stand
    describe: `import ${p.binding.name} (${p.url.origin})`,
    done: undefined,
  });
}

/** True when appending `target` to the bound path cannot climb out of it. */
function staysInside(target: string): boolean {
  if (!target.startsWith('/')) return false; // absolute-form or asterisk-form targets
  const q = target.indexOf('?');
  const path = q === -1 ? target : target.slice(0, q);
  let decoded: string;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    return false;
  }
  for (const segment of decoded.split(/[/\\]/)) if (segment === '.' || segment === '..') return false;
  return true;
}

