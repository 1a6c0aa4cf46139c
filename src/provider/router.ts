// The message path: POST /s/<service>/<operation> with a JSON body (DESIGN.md, flow
// steps 1, 2 and 5). Plain node:http, no framework: look the service and operation up
// in memory, check the body against the operation's compiled input schema, pick the
// ready endpoint with the fewest outstanding requests (the only place an endpoint is
// chosen), and forward over the host's pooled keep-alive connections with the route
// token. With no ready endpoint the message waits in the activator (the one method the
// router needs of it) until the routing table has one. Nothing here
// touches the registry database.
//
// Failures on the way to an instance:
// - not delivered (the host says the instance is not there, its socket refuses, or the
//   host itself cannot be reached): the endpoint leaves the routing set and the message
//   goes to another endpoint, whatever the operation;
// - delivered and then lost (the instance closed the connection without answering, a
//   crash): idempotent operations go to another endpoint, others are answered 502.
// Which failure it was, the host says in the x-shoal-error header of the replies it makes
// itself (src/protocol/data-plane.ts); an instance's own reply never carries it.
import { EventEmitter } from 'node:events';
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { ReplyHead, UpstreamExchange } from '../http/index.ts';
import { dataPlaneErrorOf, ROUTE_HEADER, type DataPlaneError, ShoalError, errorReply, type ErrorCode } from '../protocol/index.ts';
import type { InFlightTracker } from './balancer/index.ts';
import { leastOutstanding } from './balancer/index.ts';
import type { CompiledOperation, RemovalReason, RouteEndpoint, RoutingTable, ServiceEntry } from './routing-table.ts';
import { retryDecision } from './crash-policy.ts';

/**
 * What the router needs of the activator (Knative's one-method Throttler): wait until
 * the service has ready endpoints in the routing table. The router alone chooses one.
 */
export interface EndpointWaiter {
  wait(service: string, signal?: AbortSignal): Promise<void>;
}

export interface RouterHooks {
  /** A message is about to be sent to `endpoint` (tests watch this; metrics count it). */
  onRouted?(endpoint: RouteEndpoint, operation: string): void;
  /** A reply from an instance has been passed on in full. */
  onReply?(endpoint: RouteEndpoint, operation: string, status: number, startedAt: number): void;
  /** Every message answered, with the status the consumer got. */
  onAnswered?(service: string, operation: string, status: number, startedAt: number): void;
  /** The message found no ready endpoint and waited for one. */
  onQueued?(service: string): void;
}

export interface RouterOptions {
  table: RoutingTable;
  waiter: EndpointWaiter;
  tracker: InFlightTracker;
  /** Loads a service this provider has not seen (another provider registered it). Cold path only. */
  resolveService?(name: string): Promise<ServiceEntry | undefined>;
  /** Largest request body accepted. Default 10 MiB. */
  maxBodyBytes?: number;
  /** Longest an instance may stay silent. Default 60 s. */
  timeoutMs?: number;
  /** Further endpoints tried after a failure that allows it. Default 2. */
  maxRetries?: number;
  /**
   * Fetches a freshly signed route token for the endpoint from its host (and stores it in
   * the table); false if the host cannot give one. Called when the host refuses a token
   * (expired, or signed with a key it no longer has): the message is sent once more with
   * the new token, so consumers never see a route-token failure. Without it such replies
   * become 502.
   */
  refreshRoute?(endpoint: RouteEndpoint): Promise<boolean>;
  hooks?: RouterHooks;
}

export interface Router {
  /** Handles a request whose path starts with /s/. */
  handle(req: IncomingMessage, res: ServerResponse): void;
  /**
   * The same path for a message from inside this provider (the farms' intermediaries):
   * no HTTP hop to its own /s/, the same checks, choice of endpoint, retries and hooks.
   * Aborting `signal` drops the message as a consumer closing its connection would.
   */
  invoke(service: string, operation: string, body: string, signal?: AbortSignal): Promise<InvokeReply>;
}

export interface InvokeReply {
  status: number;
  body: string;
  contentType?: string;
}

/** What the router writes a reply to: a ServerResponse, or invoke()'s in-memory one. */
interface ReplySink {
  readonly destroyed: boolean;
  readonly headersSent: boolean;
  readonly writableFinished: boolean;
  setHeader(name: string, value: string): unknown;
  writeHead(status: number, headers: OutgoingHttpHeaders | string[]): unknown;
  write(chunk: Buffer): boolean;
  end(body?: Buffer | string): unknown;
  once(event: 'close' | 'drain', listener: () => void): unknown;
  destroy(): unknown;
}

export const MESSAGE_PREFIX = '/s/';

interface Message {
  service: ServiceEntry;
  op: CompiledOperation;
  body: Buffer;
  res: ReplySink;
  startedAt: number;
  /** Endpoints already tried. */
  tried: Set<string> | undefined;
  attempts: number;
  signal: AbortSignal | undefined;
  /** The route token was refreshed once for this message already. */
  tokenRefreshed?: boolean;
}

export function createRouter(options: RouterOptions): Router {
  const { table, waiter, tracker } = options;
  const maxBodyBytes = options.maxBodyBytes ?? 10 * 1024 * 1024;
  const timeoutMs = options.timeoutMs ?? 60_000;
  const maxRetries = options.maxRetries ?? 2;
  const hooks = options.hooks ?? {};

  function handle(req: IncomingMessage, res: ServerResponse): void {
    const startedAt = performance.now();
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    const slash = path.indexOf('/', MESSAGE_PREFIX.length);
    const serviceName = slash === -1 ? path.slice(MESSAGE_PREFIX.length) : path.slice(MESSAGE_PREFIX.length, slash);
    const opName = slash === -1 ? '' : path.slice(slash + 1);
    if (serviceName === '' || opName === '' || opName.includes('/')) {
      drain(req);
      return reply(res, 'not-found', `no route ${path.slice(0, 200)}: messages go to POST /s/<service>/<operation>`, undefined, '', '', startedAt);
    }
    const service = table.service(serviceName);
    if (service === undefined) {
      if (options.resolveService === undefined) return unknownService(req, res, serviceName, startedAt);
      // Cold path: perhaps another provider registered it.
      req.pause();
      options.resolveService(serviceName).then(
        (found) => {
          req.resume();
          if (found === undefined) unknownService(req, res, serviceName, startedAt);
          else accept(req, res, found, opName, startedAt);
        },
        () => {
          req.resume();
          unknownService(req, res, serviceName, startedAt);
        },
      );
      return;
    }
    accept(req, res, service, opName, startedAt);
  }

  function unknownService(req: IncomingMessage, res: ServerResponse, name: string, startedAt: number): void {
    drain(req);
    reply(res, 'not-found', `no service named ${JSON.stringify(name)}`, 'service', name, '', startedAt);
  }

  function accept(req: IncomingMessage, res: ServerResponse, service: ServiceEntry, opName: string, startedAt: number): void {
    const op = service.operations.get(opName);
    if (op === undefined) {
      drain(req);
      const known = [...service.operations.keys()].join(', ');
      return reply(res, 'not-found', `service ${service.name} has no operation ${JSON.stringify(opName)} (it has: ${known})`, 'operation', service.name, opName, startedAt);
    }
    if (req.method !== 'POST') {
      drain(req);
      res.setHeader('allow', 'POST');
      return reply(res, 'method-not-allowed', `send messages with POST, not ${req.method}`, 'method', service.name, op.name, startedAt);
    }
    const declared = Number(req.headers['content-length'] ?? -1);
    if (declared > maxBodyBytes) {
      res.setHeader('connection', 'close');
      drain(req);
      return reply(res, 'too-large', `message body of ${declared} bytes is larger than the limit of ${maxBodyBytes} bytes`, 'body', service.name, op.name, startedAt);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let refused = false;
    req.on('data', (chunk: Buffer) => {
      if (refused) return;
      size += chunk.length;
      if (size > maxBodyBytes) {
        refused = true;
        res.setHeader('connection', 'close');
        reply(res, 'too-large', `message body is larger than the limit of ${maxBodyBytes} bytes`, 'body', service.name, op.name, startedAt);
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (refused) return;
      const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
      checked(service, op, body, res, startedAt);
    });
  }

  function checked(service: ServiceEntry, op: CompiledOperation, raw: Buffer, res: ReplySink, startedAt: number): void {
    let value: unknown;
    let body = raw;
    if (raw.length === 0) {
      value = {};
      body = EMPTY_OBJECT;
    } else {
      try {
        value = JSON.parse(raw.toString('utf8'));
      } catch (e) {
        return reply(res, 'invalid', `message body is not JSON: ${(e as Error).message}`, 'body', service.name, op.name, startedAt);
      }
    }
    const problem = op.check(value);
    if (problem !== undefined) {
      const field = problem.path === '' ? 'body' : problem.path;
      return reply(res, 'invalid', `${service.name}.${op.name} input: ${field === 'body' ? 'the body' : field} ${problem.message}`, field, service.name, op.name, startedAt);
    }
    table.touch(service.name, Date.now());
    const msg: Message = { service, op, body, res, startedAt, tried: undefined, attempts: 0, signal: undefined };
    route(msg);
  }

  function route(msg: Message): void {
    const ready = table.endpoints(msg.service.name);
    // Every endpoint tried already (a retry): any of them again, as the retry policy allows.
    const ep = choose(ready, msg.tried) ?? choose(ready, undefined);
    if (ep !== undefined) return forward(msg, ep);
    // No ready endpoint: wait until the table has one. Only now is a signal worth making.
    if (msg.signal === undefined) {
      const controller = new AbortController();
      msg.res.once('close', () => {
        if (!msg.res.writableFinished) controller.abort();
      });
      msg.signal = controller.signal;
    }
    hooks.onQueued?.(msg.service.name);
    waiter.wait(msg.service.name, msg.signal).then(
      () => {
        if (msg.res.destroyed) return;
        // Released: the table has endpoints now; choose among them (if they left again, wait again).
        route(msg);
      },
      (err: unknown) => {
        if (msg.res.destroyed) return;
        const e = err as { code?: ErrorCode; message?: string; retryAfterSeconds?: number };
        const code: ErrorCode = e.code ?? 'unavailable';
        if (e.retryAfterSeconds !== undefined) msg.res.setHeader('retry-after', String(Math.max(1, Math.ceil(e.retryAfterSeconds))));
        reply(msg.res, code, e.message ?? String(err), undefined, msg.service.name, msg.op.name, msg.startedAt);
      },
    );
  }

  function choose(ready: readonly RouteEndpoint[], tried: Set<string> | undefined): RouteEndpoint | undefined {
    if (ready.length === 0) return undefined;
    if (tried === undefined) return ready.length === 1 ? ready[0] : leastOutstanding(tracker.view(ready), Math.random);
    const rest = ready.filter((e) => !tried.has(e.id));
    return rest.length === 0 ? undefined : leastOutstanding(tracker.view(rest), Math.random);
  }

  /** After a failed attempt: another endpoint if crash-policy allows it, else `otherwise`. */
  function retry(msg: Message, ep: RouteEndpoint, delivered: boolean, otherwise: () => void): void {
    (msg.tried ??= new Set()).add(ep.id);
    msg.attempts++;
    const decision = retryDecision({ idempotent: msg.op.idempotent, attempts: msg.attempts, maxAttempts: maxRetries + 1, delivered });
    if (decision !== 'retry' || msg.res.destroyed) return otherwise();
    route(msg);
  }

  function forward(msg: Message, ep: RouteEndpoint): void {
    const release = tracker.acquire(ep.id);
    hooks.onRouted?.(ep, msg.op.name);
    const { res, op } = msg;
    let settled = false;
    const done = () => {
      if (settled) return false;
      settled = true;
      release();
      return true;
    };
    let head: ReplyHead | undefined;
    /** The host's own failure that decides where the message goes next, if the reply is one. */
    let judged: DataPlaneError | undefined;
    // Replies the router must read before deciding (the host's own errors) and small
    // replies (sent on in one write) are collected; others are streamed.
    let collected: Buffer[] | undefined;
    let size = 0;
    let streaming = false;
    const request = {
      method: 'POST',
      path: `${ep.pathPrefix}/${op.name}`,
      headers: ['host', ep.authority, 'content-type', 'application/json', 'content-length', String(msg.body.length), ROUTE_HEADER, ep.token],
      body: msg.body,
      timeoutMs,
    };
    const exchange: UpstreamExchange = ep.link.request(request, {
      onHead(h) {
        head = h;
        if (h.status >= 400) {
          const mark = dataPlaneErrorOf(h.headers);
          if (mark !== undefined && JUDGED.has(mark)) judged = mark;
        }
        const length = h.framing === 'length' ? h.length : h.framing === 'none' ? 0 : -1;
        if ((judged !== undefined && length <= MAX_JUDGED) || (length >= 0 && length <= SMALL_REPLY)) {
          collected = [];
          return;
        }
        if (res.destroyed) {
          exchange.abort();
          done();
          return;
        }
        streaming = true;
        res.writeHead(h.status, forConsumer(h.headers));
      },
      onData(chunk) {
        if (collected !== undefined) {
          size += chunk.length;
          if (size > MAX_JUDGED) {
            // A chunked error reply past the limit: no longer worth reading.
            exchange.abort();
            collected = undefined;
            if (done()) fail(msg, 'bad-gateway', `the reply of instance ${ep.id} is an error larger than ${MAX_JUDGED} bytes`);
            return;
          }
          collected.push(chunk);
          return;
        }
        if (!res.write(chunk)) {
          exchange.pause();
          res.once('drain', () => exchange.resume());
        }
      },
      onEnd() {
        if (!done() || head === undefined) return;
        if (streaming) {
          res.end();
          return finished(msg, ep, head.status);
        }
        const body = collected!.length === 1 ? collected![0]! : Buffer.concat(collected!);
        const status = head.status;
        if (judged !== undefined) return judge(msg, ep, head, body, judged);
        if (res.destroyed) return;
        res.writeHead(status, forConsumer(head.headers));
        res.end(body);
        finished(msg, ep, status);
      },
      onError(err, sent, replied) {
        if (!done()) return;
        if (replied || res.headersSent) {
          // The reply had begun: it can only be cut, so the consumer sees it is incomplete.
          res.destroy();
          return;
        }
        const code = err.code ?? '';
        if (!sent) {
          // The host is not answering at all: nothing reached the instance.
          gone(ep, 'unreachable');
          return retry(msg, ep, false, () => fail(msg, 'bad-gateway', `host ${ep.hostId} of instance ${ep.id} is unreachable (${code || err.message})`));
        }
        const what = code === 'ETIMEDOUT' ? `instance ${ep.id} did not answer within ${timeoutMs} ms` : `the connection to instance ${ep.id} failed (${err.message})`;
        retry(msg, ep, true, () => fail(msg, code === 'ETIMEDOUT' ? 'timeout' : 'bad-gateway', what));
      },
    });
  }

  /** The host's own failure, as its x-shoal-error header names it (one of JUDGED). */
  function judge(msg: Message, ep: RouteEndpoint, head: ReplyHead, body: Buffer, mark: DataPlaneError): void {
    switch (mark) {
      case 'gone':
      case 'no-route':
        // The instance is not there; it never saw the message.
        gone(ep, 'gone');
        return retry(msg, ep, false, () => fail(msg, 'bad-gateway', `instance ${ep.id} is no longer on host ${ep.hostId}`));
      case 'not-ready':
        return retry(msg, ep, false, () => passOn(msg, ep, head, body));
      case 'refused':
        // Its socket is gone: nothing reached it.
        gone(ep, 'gone');
        return retry(msg, ep, false, () => passOn(msg, ep, head, body));
      case 'token':
        // The host refused the route token (it expired between refreshes): nothing reached the instance.
        return refreshAndResend(msg, ep);
      case 'lost':
      case 'bad-reply':
        // It took the message and died (or garbled its reply) before answering: a crash in flight.
        gone(ep, 'crashed');
        return retry(msg, ep, true, () => passOn(msg, ep, head, body));
      default:
        return passOn(msg, ep, head, body);
    }
  }

  /** One fresh token from the host, then the same endpoint again; else another endpoint or a 502 (never the host's token mark). */
  function refreshAndResend(msg: Message, ep: RouteEndpoint): void {
    const refused = () => fail(msg, 'bad-gateway', `host ${ep.hostId} refused the route token of instance ${ep.id} and gave no fresh one`);
    if (msg.tokenRefreshed === true || options.refreshRoute === undefined) {
      return retry(msg, ep, false, refused);
    }
    msg.tokenRefreshed = true;
    options.refreshRoute(ep).then(
      (ok) => {
        if (msg.res.destroyed) return;
        if (ok && table.endpoint(ep.id) === ep) return forward(msg, ep);
        retry(msg, ep, false, refused);
      },
      (err: unknown) => {
        if (msg.res.destroyed) return;
        fail(msg, 'bad-gateway', `refreshing the route token of instance ${ep.id} failed: ${(err as Error).message}`);
      },
    );
  }

  function gone(ep: RouteEndpoint, reason: RemovalReason): void {
    table.remove(ep.id, reason);
  }

  function passOn(msg: Message, ep: RouteEndpoint, head: ReplyHead, body: Buffer): void {
    const { res } = msg;
    if (res.headersSent || res.destroyed) return;
    const flat: string[] = [];
    for (let i = 0; i < head.headers.length; i += 2) {
      const name = head.headers[i]!.toLowerCase();
      if (name === 'content-length' || name === 'set-cookie') continue;
      flat.push(head.headers[i]!, head.headers[i + 1]!);
    }
    flat.push('content-length', String(body.length), ...CONSUMER_REPLY_HEADERS);
    res.writeHead(head.status, flat);
    res.end(body);
    finished(msg, ep, head.status);
  }

  function finished(msg: Message, ep: RouteEndpoint, status: number): void {
    hooks.onReply?.(ep, msg.op.name, status, msg.startedAt);
    hooks.onAnswered?.(msg.service.name, msg.op.name, status, msg.startedAt);
  }

  function fail(msg: Message, code: 'bad-gateway' | 'timeout', message: string): void {
    reply(msg.res, code, message, undefined, msg.service.name, msg.op.name, msg.startedAt);
  }

  function reply(
    res: ReplySink,
    code: ErrorCode,
    message: string,
    field: string | undefined,
    service: string,
    operation: string,
    startedAt: number,
  ): void {
    if (res.headersSent || res.destroyed) return;
    const { status, body: error } = errorReply(new ShoalError(code, message, field === undefined ? {} : { field }));
    const body = JSON.stringify(error);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
    hooks.onAnswered?.(service, operation, status, startedAt);
  }

  function invoke(serviceName: string, opName: string, body: string, signal?: AbortSignal): Promise<InvokeReply> {
    const startedAt = performance.now();
    const sink = createSink(signal);
    void (async () => {
      const service = table.service(serviceName) ?? (await options.resolveService?.(serviceName).catch(() => undefined));
      if (service === undefined) return reply(sink, 'not-found', `no service named ${JSON.stringify(serviceName)}`, 'service', serviceName, '', startedAt);
      const op = service.operations.get(opName);
      if (op === undefined) return reply(sink, 'not-found', `service ${service.name} has no operation ${JSON.stringify(opName)}`, 'operation', service.name, opName, startedAt);
      const raw = Buffer.from(body, 'utf8');
      if (raw.length > maxBodyBytes) return reply(sink, 'too-large', `message body is larger than the limit of ${maxBodyBytes} bytes`, 'body', service.name, op.name, startedAt);
      checked(service, op, raw, sink, startedAt);
    })();
    return sink.reply;
  }

  return { handle, invoke };
}

/** An in-memory reply for invoke(): collects what the router writes; settles at end or abort. */
function createSink(signal: AbortSignal | undefined): ReplySink & { reply: Promise<InvokeReply> } {
  const events = new EventEmitter();
  let resolve!: (r: InvokeReply) => void;
  let reject!: (e: unknown) => void;
  const reply = new Promise<InvokeReply>((ok, fail) => {
    resolve = ok;
    reject = fail;
  });
  let status = 0;
  let contentType: string | undefined;
  const chunks: Buffer[] = [];
  const sink = {
    reply,
    destroyed: false,
    headersSent: false,
    writableFinished: false,
    setHeader: () => undefined,
    writeHead(s: number, headers: OutgoingHttpHeaders | string[]) {
      status = s;
      sink.headersSent = true;
      if (Array.isArray(headers)) {
        for (let i = 0; i < headers.length; i += 2) if (headers[i]!.toLowerCase() === 'content-type') contentType = headers[i + 1];
      } else if (headers['content-type'] !== undefined) contentType = String(headers['content-type']);
    },
    write(chunk: Buffer) {
      chunks.push(chunk);
      return true;
    },
    end(body?: Buffer | string) {
      if (body !== undefined) chunks.push(typeof body === 'string' ? Buffer.from(body) : body);
      sink.writableFinished = true;
      signal?.removeEventListener('abort', onAbort);
      resolve({ status, body: Buffer.concat(chunks).toString('utf8'), ...(contentType === undefined ? {} : { contentType }) });
      events.emit('close');
    },
    once(event: 'close' | 'drain', listener: () => void) {
      events.once(event, listener);
    },
    destroy() {
      if (sink.destroyed) return;
      sink.destroyed = true;
      reject(signal?.reason ?? new ShoalError('unavailable', 'the reply was cut off'));
      if (!sink.writableFinished) events.emit('close');
    },
  };
  const onAbort = () => sink.destroy();
  if (signal?.aborted) queueMicrotask(onAbort);
  else signal?.addEventListener('abort', onAbort, { once: true });
  return sink;
}

const EMPTY_OBJECT = Buffer.from('{}');
/** Replies up to this size are buffered and written at once. */
const SMALL_REPLY = 64 * 1024;
/** The host's own errors that decide the next step are read whole, up to this size (they are small). */
const MAX_JUDGED = 1024 * 1024;
/** The host's own errors that take an endpoint out or send the message elsewhere; others are passed on. */
const JUDGED: ReadonlySet<DataPlaneError> = new Set<DataPlaneError>(['gone', 'no-route', 'not-ready', 'refused', 'lost', 'bad-reply', 'token']);

function drain(req: IncomingMessage): void {
  req.resume();
}

/**
 * An instance's reply is served from the provider's own origin, where the dashboard's
 * session cookie lives: whatever the instance says its reply is (text/html, say), a browser
 * must not run it there, nor keep a cookie it sets. So no set-cookie passes, and every
 * reply carries a sandboxing policy (an opaque origin, no scripts) and nosniff.
 */
export const CONSUMER_REPLY_HEADERS: readonly string[] = [
  'content-security-policy',
  "sandbox; default-src 'none'; frame-ancestors 'none'",
  'x-content-type-options',
  'nosniff',
];

/** An instance's reply headers as a consumer gets them (see CONSUMER_REPLY_HEADERS). */
export function forConsumer(headers: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!;
    if (name.length === 10 && name.toLowerCase() === 'set-cookie') continue;
    out.push(name, headers[i + 1]!);
  }
  out.push(...CONSUMER_REPLY_HEADERS);
  return out;
}
