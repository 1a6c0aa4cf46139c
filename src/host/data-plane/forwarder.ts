// The host's data-plane HTTP server (DESIGN.md, flow step 6). It keeps no route table: the
// signed route token in each request names the instance (the seeds' reference parameters),
// and the host only maps an instance id to its Unix socket.
//
// URL shape: everything under the fixed prefix /i is forwarded verbatim, minus the prefix:
//   <method> /i/<rest>?<query>   →   <method> /<rest>?<query>   on the instance's socket
//   (/i and /i?<query> go to / and /?<query>). The request must carry `x-shoal-route: <token>`.
//
// Replies the forwarder makes itself are JSON `{"error":{"code","message"}}` and carry
// `x-shoal-error: <reason>` (src/protocol/data-plane.ts), which an instance's reply never
// does (the forwarder drops it), so callers tell the two apart without reading bodies:
//   401/403 token (missing · forged, altered or expired) · 403 operation (a path the token's
//   scope does not name: the service never declared it) · 404 gone (instance not on this
//   host) · 404 no-route (a path outside /i) · 503 not-ready (Retry-After: 1) · 413
//   too-large · 502 refused (socket refuses or is missing) · 502 lost (closed or failed
//   before a complete reply) · 502 bad-reply (invalid HTTP) · 504 timeout.

import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { hardenServer } from '../../http/index.ts';
import { ShoalError, INSTANCE_HEADER } from '../../protocol/index.ts';
import { closeServer, createUpstream, relay, replyError, readRequestHead, ROUTE_HEADER, type OutgoingRequest, type ReplyHandlers, type Upstream, type UpstreamExchange } from '../../http/index.ts';
import type { ErrorCode, DataPlaneError } from '../../protocol/index.ts';
import { answerLater, relayExchange } from './local-exchange.ts';
import { claimsReach, verifyRouteToken, type RouteClaims, type RouteTokenFailure } from './route-token.ts';

/** A reply the forwarder makes itself: status, error code, x-shoal-error mark, message, extra headers. */
type Refusal = [status: number, code: ErrorCode, reason: DataPlaneError, message: string, extra?: string[]];

export type InstanceState = 'ready' | 'paused' | 'starting' | 'stopping';

export interface ForwardEvent {
  instance: string;
  service: string;
  status: number;
  durationMs: number;
  bytesIn: number;
  bytesOut: number;
}

export interface ForwarderOptions {
  /** Route-token keys: tokens signed with any of them pass (the first is the current one). */
  keys: Uint8Array[];
  /** instance id → socket path, or undefined if the host has no such instance (removed/unknown). Must be O(1), no I/O. */
  resolveInstance(id: string): { socketPath: string; state: InstanceState } | undefined;
  /**
   * Idle limit of an exchange, default 30 s: how long the instance may stay silent (before
   * its reply's head → 504; during its body → the reply is cut), and how long a client may
   * leave the reply unread (the reply is cut).
   */
  requestTimeoutMs?: number;
  /** Largest request body forwarded. Default 10 MiB. */
  maxBodyBytes?: number;
  /** Called once per request that carried a valid token (for metrics); status 499 = client left first. */
  onRequest?(event: ForwardEvent): void;
}

export interface Forwarder {
  handle(req: IncomingMessage, res: ServerResponse): void;
  /**
   * The same as `handle` for a request from this process (a provider beside its host,
   * src/http/local-link.ts): the same checks and marked replies, no HTTP server between.
   */
  exchange(req: OutgoingRequest, handlers: ReplyHandlers): UpstreamExchange;
  /** Drops the kept-alive connections to an instance (by id or socket path) once it is gone. */
  forget(instanceOrSocketPath: string): void;
  /**
   * Holds new messages to `instance` here and resolves once none is in flight to it (live
   * state: a capture sees no message half-handled). The returned function lets the held
   * messages go on. Rejects (and releases) after timeoutMs.
   */
  quiesce(instance: string, timeoutMs: number): Promise<() => void>;
  close(): Promise<void>;
}

const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_BODY = 10 * 1024 * 1024;
/** Verified tokens remembered; a provider reuses one token per endpoint for many messages. */
const TOKEN_CACHE_SIZE = 1024;

export function createForwarder(options: ForwarderOptions): Forwarder {
  if (options.keys.length === 0) throw new ShoalError('invalid', 'the forwarder needs at least one route-token key', { field: 'keys' });
  const keys = options.keys.slice();
  const timeoutMs = options.requestTimeoutMs ?? DEFAULT_TIMEOUT_MS;
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY;
  const onRequest = options.onRequest;

  // token → claims it was verified to carry. Insertion-ordered, oldest evicted first; expiry
  // is checked on every hit, and only verified tokens get in (forgeries cannot flood it).
  const verified = new Map<string, RouteClaims>();
  // socket path → its pool of kept-alive connections; instance id → the socket path it uses.
  const upstreams = new Map<string, Upstream>();
  const socketOf = new Map<string, string>();

  function check(token: string): RouteClaims | RouteTokenFailure {
    const now = Date.now();
    const hit = verified.get(token);
    if (hit !== undefined) {
      if (now < hit.expiresAt) return hit;
      verified.delete(token);
      return 'expired';
    }
    const result = verifyRouteToken(token, keys, now);
    if (!result.ok) return result.reason;
    if (verified.size >= TOKEN_CACHE_SIZE) verified.delete(verified.keys().next().value!);
    verified.set(token, result.claims);
    return result.claims;
  }

  function upstreamFor(instance: string, socketPath: string): Upstream {
    let upstream = upstreams.get(socketPath);
    if (upstream === undefined) {
      upstream = createUpstream({ origin: 'http://localhost', socketPath, timeoutMs });
      upstreams.set(socketPath, upstream);
    }
    const known = socketOf.get(instance);
    if (known !== socketPath) {
      if (known !== undefined) dropUpstream(known);
      socketOf.set(instance, socketPath);
    }
    return upstream;
  }

  function dropUpstream(socketPath: string): void {
    upstreams.get(socketPath)?.destroy();
    upstreams.delete(socketPath);
  }

  function forget(instanceOrSocketPath: string): void {
    const socketPath = socketOf.get(instanceOrSocketPath);
    if (socketPath !== undefined) {
      socketOf.delete(instanceOrSocketPath);
      dropUpstream(socketPath);
      return;
    }
    for (const [instance, path] of socketOf) if (path === instanceOrSocketPath) socketOf.delete(instance);
    dropUpstream(instanceOrSocketPath);
  }

  // Quiescing (live state): messages in flight per instance, and the gates that hold new ones.
  const inFlight = new Map<string, number>();
  const gates = new Map<string, { opened: Promise<void>; idle: (() => void) | undefined }>();

  function leave(instance: string): void {
    const n = (inFlight.get(instance) ?? 1) - 1;
    if (n > 0) inFlight.set(instance, n);
    else {
      inFlight.delete(instance);
      gates.get(instance)?.idle?.();
    }
  }

  async function quiesce(instance: string, timeoutMs: number): Promise<() => void> {
    if (gates.has(instance)) throw new ShoalError('conflict', `instance ${instance} is already being quiesced`);
    let open!: () => void;
    const gate = { opened: new Promise<void>((r) => (open = r)), idle: undefined as (() => void) | undefined };
    gates.set(instance, gate);
    const release = (): void => {
      if (gates.get(instance) === gate) gates.delete(instance);
      open();
    };
    if ((inFlight.get(instance) ?? 0) === 0) return release;
    const idle = new Promise<void>((r) => (gate.idle = r));
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((r) => (timer = setTimeout(() => r('late'), timeoutMs)));
    const outcome = await Promise.race([idle, late]);
    clearTimeout(timer);
    if (outcome === 'late') {
      release();
      throw new ShoalError('timeout', `instance ${instance} still had messages in flight after ${timeoutMs} ms`);
    }
    return release;
  }

  /** What the checks decided: a refusal the forwarder answers itself, or the instance to relay to. */
  type Admission =
    | { refused: Refusal; claims?: RouteClaims; started: number }
    | { refused: undefined; claims: RouteClaims; path: string; socketPath: string; replyHeaders: string[]; started: number };

  /**
   * The checks every message passes, over HTTP or in-process alike: the path is under /i,
   * the route token is present, genuine and unexpired, its scope reaches the path (a
   * declared operation), the instance is here and ready, and the body is within the limit.
   */
  function admit(url: string, route: string | undefined, contentLength: number): Admission {
    let path: string;
    if (url.startsWith('/i/')) path = url.slice(2);
    else if (url === '/i') path = '/';
    else if (url.startsWith('/i?')) path = '/' + url.slice(2);
    else return { refused: [404, 'not-found', 'no-route', `no route for ${url.slice(0, 200)}: data-plane requests go to /i/<path> with an ${ROUTE_HEADER} token`], started: 0 };
    if (route === undefined) return { refused: [401, 'unauthorized', 'token', `route token missing: send the ${ROUTE_HEADER} header the endpoint reference gave you`], started: 0 };
    const claims = check(route);
    if (typeof claims === 'string') return { refused: [403, 'forbidden', 'token', `route token ${TOKEN_FAILURE[claims]}`], started: 0 };
    if (!claimsReach(claims, path)) {
      return { refused: [403, 'forbidden', 'operation', `the route token of service ${claims.service} does not reach ${path.slice(0, 200)}: not one of its declared operations`], started: 0 };
    }
    const started = onRequest === undefined ? 0 : performance.now();
    const instance = options.resolveInstance(claims.instance);
    if (instance === undefined) {
      forget(claims.instance);
      return { refused: [404, 'not-found', 'gone', `instance ${claims.instance} (service ${claims.service}) is not on this host`], claims, started };
    }
    const replyHeaders = [INSTANCE_HEADER, claims.instance];
    if (instance.state !== 'ready') {
      return { refused: [503, 'unavailable', 'not-ready', `instance ${claims.instance} (service ${claims.service}) is ${instance.state}, not ready`, [...replyHeaders, 'retry-after', '1']], claims, started };
    }
    if (contentLength > maxBodyBytes) {
      // Refused before reading it; closing the connection spares us reading the body.
      return { refused: [413, 'too-large', 'too-large', `request body of ${contentLength} bytes is larger than the limit of ${maxBodyBytes} bytes`, [...replyHeaders, 'connection', 'close']], claims, started };
    }
    return { refused: undefined, claims, path, socketPath: instance.socketPath, replyHeaders, started };
  }

  function handle(req: IncomingMessage, res: ServerResponse): void {
    admitAndRelay(req, res, readRequestHead(req.rawHeaders));
  }

  function admitAndRelay(req: IncomingMessage, res: ServerResponse, head: ReturnType<typeof readRequestHead>): void {
    const a = admit(req.url ?? '', head.route, head.contentLength);
    if (a.refused !== undefined) {
      const [status, code, reason, message, extra] = a.refused;
      replyError(res, status, code, reason, message, extra);
      if (a.claims !== undefined) report(a.claims, a.started, status, 0, 0);
      return;
    }
    const { claims, started } = a;
    const gate = gates.get(claims.instance);
    if (gate !== undefined) {
      // Held while the instance is quiesced; then checked again as if it had just arrived
      // (a moved instance is gone by then: the 404 sends the message to its new place).
      void gate.opened.then(() => admitAndRelay(req, res, head));
      return;
    }
    inFlight.set(claims.instance, (inFlight.get(claims.instance) ?? 0) + 1);
    res.once('close', () => leave(claims.instance));
    relay(req, res, {
      upstream: upstreamFor(claims.instance, a.socketPath),
      method: req.method!,
      path: a.path,
      head,
      maxBodyBytes,
      replyHeaders: a.replyHeaders,
      untrusted: true,
      describe: `instance ${claims.instance} (service ${claims.service})`,
      done: onRequest === undefined ? undefined : (status, bytesIn, bytesOut) => report(claims, started, status, bytesIn, bytesOut),
    });
  }

  function exchange(req: OutgoingRequest, handlers: ReplyHandlers): UpstreamExchange {
    let route: string | undefined;
    const headers: string[] = [];
    for (let i = 0; i < req.headers.length; i += 2) {
      const name = req.headers[i]!;
      if (name.length === ROUTE_HEADER.length && name.toLowerCase() === ROUTE_HEADER) route ??= req.headers[i + 1];
      else headers.push(name, req.headers[i + 1]!);
    }
    return admitAndExchange(req, route, headers, handlers);
  }

  function admitAndExchange(req: OutgoingRequest, route: string | undefined, headers: string[], handlers: ReplyHandlers): UpstreamExchange {
    const bodyBytes = req.body?.length ?? 0;
    const a = admit(req.path, route, bodyBytes);
    if (a.refused !== undefined) {
      const [status, code, reason, message, extra] = a.refused;
      if (a.claims !== undefined) report(a.claims, a.started, status, 0, 0);
      return answerLater(handlers, status, code, reason, message, extra);
    }
    const { claims, started } = a;
    const gate = gates.get(claims.instance);
    if (gate !== undefined) return heldExchange(gate.opened, () => admitAndExchange(req, route, headers, handlers));
    inFlight.set(claims.instance, (inFlight.get(claims.instance) ?? 0) + 1);
    let left = false;
    const once = (): void => {
      if (left) return;
      left = true;
      leave(claims.instance);
    };
    const counted: ReplyHandlers = {
      onHead: (h) => handlers.onHead(h),
      onData: (c) => handlers.onData(c),
      onEnd: () => {
        once();
        handlers.onEnd();
      },
      onError: (e, sent, replied) => {
        once();
        handlers.onError(e, sent, replied);
      },
    };
    const inner = relayExchange(upstreamFor(claims.instance, a.socketPath), { method: req.method, path: a.path, headers, body: req.body, timeoutMs }, counted, {
      replyHeaders: a.replyHeaders,
      describe: `instance ${claims.instance} (service ${claims.service})`,
      done: (status, bytesOut) => report(claims, started, status, bodyBytes, bytesOut),
    });
    return {
      pause: () => inner.pause(),
      resume: () => inner.resume(),
      abort: () => {
        once();
        inner.abort();
      },
    };
  }

  function report(claims: RouteClaims, started: number, status: number, bytesIn: number, bytesOut: number): void {
    if (onRequest === undefined) return;
    try {
      onRequest({ instance: claims.instance, service: claims.service, status, durationMs: performance.now() - started, bytesIn, bytesOut });
    } catch {
      // Metrics must never break forwarding.
    }
  }

  async function close(): Promise<void> {
    for (const upstream of upstreams.values()) upstream.destroy();
    upstreams.clear();
    socketOf.clear();
    verified.clear();
  }

  return { handle, exchange, forget, quiesce, close };
}

const TOKEN_FAILURE: Record<RouteTokenFailure, string> = {
  malformed: 'is malformed',
  'bad-signature': 'has a bad signature (forged or altered)',
  expired: 'has expired',
};

export interface ListeningForwarder {
  address: { host: string; port: number };
  forget(instanceOrSocketPath: string): void;
  close(): Promise<void>;
}

/** The data plane's clients are providers, each pooling many connections to a host: a higher cap. */
export const DATA_PLANE_MAX_CONNECTIONS = 4096;

/** Starts the forwarder on host:port (port 0 picks a free one). */
export async function listenForwarder(options: ForwarderOptions & { host: string; port: number }): Promise<ListeningForwarder> {
  const forwarder = createForwarder(options);
  // Callers (providers) keep connections open between messages; hold them longer than node's 5 s.
  const server = hardenServer(createServer({ keepAliveTimeout: 30_000 }, forwarder.handle), { maxConnectionsPerClient: DATA_PLANE_MAX_CONNECTIONS });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  return {
    address: { host: options.host, port },
    forget: forwarder.forget,
    close: () => closeServer(server, forwarder.close),
  };
}

/** An in-process exchange held at a quiesce gate: started once the gate opens, unless aborted first. */
function heldExchange(opened: Promise<void>, start: () => UpstreamExchange): UpstreamExchange {
  let inner: UpstreamExchange | undefined;
  let aborted = false;
  let paused = false;
  void opened.then(() => {
    if (aborted) return;
    inner = start();
    if (paused) inner.pause();
  });
  return {
    pause: () => {
      paused = true;
      inner?.pause();
    },
    resume: () => {
      paused = false;
      inner?.resume();
    },
    abort: () => {
      aborted = true;
      inner?.abort();
    },
  };
}
