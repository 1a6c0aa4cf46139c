// One hardening for every HTTP server Shoal runs (provider, store, host control and data
// planes, import sockets), so none of them can be held by slow or many connections, and
// none answers a browser that was not meant to reach it (issue 9, items 4 and 6).
//
// Slow and many connections:
// - headers must arrive within headersTimeoutMs and a whole request within
//   requestTimeoutMs (0: no cap, for multi-gigabyte pushes), else 408 (node's own checks);
// - a connection silent for idleTimeoutMs while its request is still arriving gets 408 with
//   a JSON body naming the timeout and is closed (node only drops such a socket, silently);
//   one idle between requests, or whose client stopped reading a reply, is closed; one whose
//   request is complete and whose reply is being prepared is left to its handler's timeouts;
// - at most maxConnectionsPerClient connections per client address (IPv6 per /64, Unix
//   sockets as one client): the next gets 503 and is closed before it is read.
// Browser-borne requests:
// - bodies on the jsonBodies paths must be `content-type: application/json` (415): a page
//   can only send text/plain or a form without a preflight;
// - on a loopback listener the Host header must name the listener (403): a DNS-rebound page
//   sends its own name;
// - no CORS headers, unless corsOrigins lists the page's origin.
// Limits come from SHOAL_* environment variables (the operator's word), then the options
// (the server's own needs), then the defaults.
// Call it right after createServer (with the request listener) and before listen.
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface HardeningOptions {
  /** Longest the request line and headers may take. Default 10 s (SHOAL_HEADERS_TIMEOUT_MS). */
  headersTimeoutMs?: number;
  /** Longest a whole request may take to arrive; 0 for none. Default 300 s (SHOAL_REQUEST_TIMEOUT_MS). */
  requestTimeoutMs?: number;
  /** Longest silence while a request arrives, or between requests. Default 30 s (SHOAL_IDLE_TIMEOUT_MS). */
  idleTimeoutMs?: number;
  /** Concurrent connections one client address may hold. Default 512 (SHOAL_MAX_CONNECTIONS_PER_CLIENT). */
  maxConnectionsPerClient?: number;
  /** Path prefixes whose request bodies must be application/json. Default none. */
  jsonBodies?: readonly string[];
  /** Host names (besides localhost and the listener's address) a loopback listener answers to (SHOAL_ALLOWED_HOSTS, comma-separated). */
  allowedHosts?: readonly string[];
  /** Origins that get CORS headers (SHOAL_CORS_ORIGINS, comma-separated). Default none. */
  corsOrigins?: readonly string[];
}

export interface HardeningLimits {
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  idleTimeoutMs: number;
  maxConnectionsPerClient: number;
}

export const HARDENING_DEFAULTS: HardeningLimits = { headersTimeoutMs: 10_000, requestTimeoutMs: 300_000, idleTimeoutMs: 30_000, maxConnectionsPerClient: 512 };

type Listener = (req: IncomingMessage, res: ServerResponse) => void;

interface SocketState {
  key: string;
  /** The request being received or answered on this socket, if any. */
  current: { req: IncomingMessage; res: ServerResponse } | undefined;
  /** socket.bytesRead when the last request was answered (more means a request has begun). */
  readMark: number;
}

const STATE = Symbol('shoal.hardening');
type Tracked = Socket & { [STATE]?: SocketState };

/** The limits a server gets: environment, then options, then defaults. */
export function hardeningLimits(options: HardeningOptions = {}, env: NodeJS.ProcessEnv = process.env): HardeningLimits {
  const pick = (given: number | undefined, name: string, fallback: number): number => {
    const raw = env[name];
    const n = raw === undefined || raw === '' ? NaN : Number(raw);
    if (Number.isInteger(n) && n >= 0) return n;
    return given ?? fallback;
  };
  return {
    headersTimeoutMs: pick(options.headersTimeoutMs, 'SHOAL_HEADERS_TIMEOUT_MS', HARDENING_DEFAULTS.headersTimeoutMs),
    requestTimeoutMs: pick(options.requestTimeoutMs, 'SHOAL_REQUEST_TIMEOUT_MS', HARDENING_DEFAULTS.requestTimeoutMs),
    idleTimeoutMs: pick(options.idleTimeoutMs, 'SHOAL_IDLE_TIMEOUT_MS', HARDENING_DEFAULTS.idleTimeoutMs),
    maxConnectionsPerClient: pick(options.maxConnectionsPerClient, 'SHOAL_MAX_CONNECTIONS_PER_CLIENT', HARDENING_DEFAULTS.maxConnectionsPerClient),
  };
}

export function hardenServer<S extends Server>(server: S, options: HardeningOptions = {}): S {
  const limits = hardeningLimits(options);
  const list = (given: readonly string[] | undefined, name: string): string[] => [
    ...(given ?? []),
    ...(process.env[name] ?? '').split(',').map((s) => s.trim()).filter((s) => s !== ''),
  ];
  const jsonBodies = options.jsonBodies ?? [];
  const allowedHosts = new Set(['localhost', '127.0.0.1', '[::1]', ...list(options.allowedHosts, 'SHOAL_ALLOWED_HOSTS').map((h) => h.toLowerCase())]);
  const corsOrigins = new Set(list(options.corsOrigins, 'SHOAL_CORS_ORIGINS'));

  server.headersTimeout = limits.headersTimeoutMs;
  server.requestTimeout = limits.requestTimeoutMs;
  // node checks the two above on this interval (default 30 s), read when it starts listening:
  // check often enough to keep them.
  const checks = [limits.headersTimeoutMs, limits.requestTimeoutMs].filter((ms) => ms > 0);
  if (checks.length > 0) (server as unknown as { connectionsCheckingInterval: number }).connectionsCheckingInterval = Math.max(100, Math.min(1000, ...checks.map((ms) => Math.floor(ms / 4))));
  if (server.keepAliveTimeout > limits.idleTimeoutMs && limits.idleTimeoutMs > 0) server.keepAliveTimeout = limits.idleTimeoutMs;

  // The listener's address, read once per listen: server.address() is a getsockname(2) call,
  // and the Host check needs it on every request.
  let address: ReturnType<Server['address']> | undefined;
  server.on('listening', () => (address = server.address()));
  server.on('close', () => (address = undefined));
  const listenerAddress = (): ReturnType<Server['address']> => (address ??= server.address());

  const perClient = new Map<string, number>();
  server.prependListener('connection', (socket: Tracked) => {
    const key = clientKey(socket);
    const n = perClient.get(key) ?? 0;
    if (limits.maxConnectionsPerClient > 0 && n >= limits.maxConnectionsPerClient) {
      // Refused before any request on it is handled: the reply is written raw and our side
      // closed; what the client sent is read and dropped (unread bytes would turn the close
      // into a reset that loses the 503), and the idle timeout ends a client that lingers.
      socket[STATE] = { key, current: undefined, readMark: Infinity };
      socket.on('error', () => socket.destroy()); // the client may be gone already; nothing to tell it
      socket.end(raw(503, 'Service Unavailable', 'unavailable', `too many connections from this client (limit ${limits.maxConnectionsPerClient})`));
      return;
    }
    perClient.set(key, n + 1);
    socket[STATE] = { key, current: undefined, readMark: 0 };
    socket.once('close', () => {
      const left = (perClient.get(key) ?? 1) - 1;
      if (left <= 0) perClient.delete(key);
      else perClient.set(key, left);
    });
  });

  if (limits.idleTimeoutMs > 0) {
    server.setTimeout(limits.idleTimeoutMs, (socket: Tracked) => onIdle(socket, limits.idleTimeoutMs));
  }

  // The guard runs before the server's own request listeners.
  const inner = server.listeners('request') as Listener[];
  server.removeAllListeners('request');
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket as Tracked;
    const state = socket[STATE];
    if (state !== undefined) {
      if (state.readMark === Infinity) return void req.resume(); // a refused connection: never handled
      state.current = { req, res };
      res.once('finish', () => {
        if (state.current?.res === res) state.current = undefined;
        state.readMark = socket.bytesRead;
      });
    }
    const refusal = guard(req, res, listenerAddress(), { jsonBodies, allowedHosts, corsOrigins });
    if (refusal !== undefined) {
      req.resume(); // drain a small body; large ones are cut by connection: close
      return reply(res, refusal.status, refusal.code, refusal.message, refusal.field);
    }
    for (const l of inner) l.call(server, req, res);
  });
  return server;
}

function onIdle(socket: Tracked, idleMs: number): void {
  const state = socket[STATE];
  const current = state?.current;
  if (current === undefined) {
    // Between requests. Bytes since the last reply are a request that stalled in its headers.
    if (state !== undefined && socket.bytesRead > state.readMark) {
      socket.end(raw(408, 'Request Timeout', 'timeout', `the request's headers stopped arriving (nothing for ${idleMs} ms)`));
      setTimeout(() => socket.destroy(), 1000).unref();
      return;
    }
    return void socket.destroy();
  }
  const { req, res } = current;
  if (!req.complete) {
    if (res.headersSent) return void socket.destroy();
    res.shouldKeepAlive = false;
    reply(res, 408, 'timeout', `the request body stopped arriving (nothing for ${idleMs} ms)`, 'body');
    res.once('finish', () => socket.destroy());
    setTimeout(() => socket.destroy(), 1000).unref();
    return;
  }
  // The reply is being prepared (handlers keep their own timeouts), unless the client has
  // stopped reading it: then bytes wait in our buffer.
  if (socket.writableLength > 0) socket.destroy();
}

interface Refusal {
  status: number;
  code: string;
  message: string;
  field: string;
}

function guard(req: IncomingMessage, res: ServerResponse, address: ReturnType<Server['address']>, o: { jsonBodies: readonly string[]; allowedHosts: ReadonlySet<string>; corsOrigins: ReadonlySet<string> }): Refusal | undefined {
  if (address !== null && typeof address === 'object' && isLoopback(address.address)) {
    const host = (req.headers.host ?? '').toLowerCase();
    if (!hostNamesListener(host, address, o.allowedHosts)) {
      return {
        status: 403,
        code: 'forbidden',
        field: 'host',
        message: `this listener answers to Host localhost:${address.port} or ${bracket(address.address)}:${address.port}, not ${JSON.stringify(host.slice(0, 200))} (DNS rebinding guard; SHOAL_ALLOWED_HOSTS adds names)`,
      };
    }
  }
  const origin = req.headers.origin;
  if (origin !== undefined && o.corsOrigins.has(origin)) {
    res.setHeader('access-control-allow-origin', origin);
    res.setHeader('vary', 'origin');
    if (req.method === 'OPTIONS' && req.headers['access-control-request-method'] !== undefined) {
      res.setHeader('access-control-allow-methods', 'GET, POST, PUT, DELETE');
      res.setHeader('access-control-allow-headers', 'authorization, content-type');
      res.setHeader('access-control-max-age', '600');
      return { status: 204, code: '', message: '', field: '' };
    }
  }
  const url = req.url ?? '/';
  if (hasBody(req) && o.jsonBodies.some((p) => url.startsWith(p))) {
    const type = req.headers['content-type'] ?? '';
    if (!/^application\/json\s*(;|$)/i.test(type)) {
      return {
        status: 415,
        code: 'unsupported',
        field: 'content-type',
        message: `send the body as JSON with the header content-type: application/json (got ${type === '' ? 'no content-type' : JSON.stringify(type.slice(0, 100))})`,
      };
    }
  }
  return undefined;
}

function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

function hostNamesListener(host: string, address: AddressInfo, allowed: ReadonlySet<string>): boolean {
  const m = /^(\[[0-9a-f:.]+\]|[^:]+)(?::(\d+))?$/.exec(host);
  if (m === null) return false;
  const port = m[2] === undefined ? 80 : Number(m[2]);
  if (port !== address.port) return false;
  const name = m[1]!;
  return allowed.has(name) || name === bracket(address.address);
}

function isLoopback(a: string): boolean {
  return a === '::1' || a.startsWith('127.') || a.startsWith('::ffff:127.');
}

function bracket(a: string): string {
  return a.includes(':') ? `[${a}]` : a;
}

/** One client per IPv4 address, per IPv6 /64 (one machine usually holds a whole /64), one for all Unix-socket peers. */
export function clientKey(socket: Socket): string {
  const a = socket.remoteAddress;
  if (a === undefined) return 'local';
  if (a.startsWith('::ffff:')) return a.slice(7);
  if (!a.includes(':')) return a;
  const groups = expandV6(a);
  return `${groups.slice(0, 4).join(':')}::/64`;
}

function expandV6(a: string): string[] {
  const [head, tail] = a.split('::') as [string, string | undefined];
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  return [...h, ...Array.from({ length: Math.max(0, 8 - h.length - t.length) }, () => '0'), ...t];
}

function reply(res: ServerResponse, status: number, code: string, message: string, field: string): void {
  if (status === 204) {
    res.writeHead(204).end();
    return;
  }
  const body = JSON.stringify({ error: { code, message, field } });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), connection: 'close' });
  res.end(body);
}

function raw(status: number, reason: string, code: string, message: string): string {
  const body = JSON.stringify({ error: { code, message } });
  return `HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`;
}
