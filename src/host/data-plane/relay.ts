// The streaming core shared by the forwarder and the import sockets: relay one HTTP
// request to an upstream and its reply back, without buffering either body.
// Plain node:http and flat raw-header arrays (no header objects are built): this is the
// hot path of every message.

import type { ClientRequest, IncomingMessage, RequestOptions, Server, ServerResponse } from 'node:http';
import type { ErrorCode } from '../../protocol/errors.ts';

/** The route token travels in this request header; it is never passed upstream. */
export const ROUTE_HEADER = 'x-shoal-route';

export interface RequestHead {
  /** The headers to send upstream, as a flat [name, value, name, value, …] array. */
  headers: string[];
  /** Declared content-length, or -1 when there is none. */
  contentLength: number;
  /** The body has no declared length (chunked); it is re-chunked upstream. */
  chunked: boolean;
  /** The x-shoal-route header, when present. */
  route: string | undefined;
}

/**
 * Reads the request's raw headers once: copies the end-to-end ones, drops the hop-by-hop
 * ones (RFC 9110 §7.6.1: connection, keep-alive, transfer-encoding, te, trailer, upgrade,
 * proxy-*, plus those named in Connection) and expect (node has already answered
 * 100-continue), and takes out the route token. `drop` names (lower case) are left out too.
 */
export function readRequestHead(raw: string[], drop?: ReadonlySet<string>, defaultHost = 'localhost'): RequestHead {
  const headers: string[] = [];
  let contentLength = -1;
  let chunked = false;
  let route: string | undefined;
  let sawHost = false;
  let connectionTokens: string[] | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    const lower = name.toLowerCase();
    if (lower === ROUTE_HEADER) {
      route ??= value;
      continue;
    }
    if (isHopByHop(lower)) {
      if (lower === 'transfer-encoding') chunked = true;
      else if (lower === 'connection') connectionTokens = extraConnectionTokens(value, connectionTokens);
      continue;
    }
    if (lower === 'expect' || (drop !== undefined && drop.has(lower))) continue;
    if (lower === 'content-length') contentLength = Number(value);
    else if (lower === 'host') sawHost = true;
    headers.push(name, value);
  }
  if (contentLength >= 0) chunked = false; // node's parser refuses both; be safe anyway
  if (chunked) headers.push('transfer-encoding', 'chunked');
  if (!sawHost && (drop === undefined || !drop.has('host'))) headers.push('host', defaultHost); // HTTP/1.1 servers refuse a request without Host
  return { headers: connectionTokens === undefined ? headers : without(headers, connectionTokens), contentLength, chunked, route };
}

/** The upstream reply's headers minus hop-by-hop ones, plus `extra`. */
export function responseHeaders(raw: string[], extra: readonly string[] | undefined): string[] {
  const headers: string[] = [];
  let connectionTokens: string[] | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const lower = name.toLowerCase();
    if (isHopByHop(lower)) {
      if (lower === 'connection') connectionTokens = extraConnectionTokens(raw[i + 1]!, connectionTokens);
      continue;
    }
    headers.push(name, raw[i + 1]!);
  }
  if (extra !== undefined) for (let i = 0; i < extra.length; i++) headers.push(extra[i]!);
  return connectionTokens === undefined ? headers : without(headers, connectionTokens);
}

function isHopByHop(lower: string): boolean {
  switch (lower) {
    case 'connection':
    case 'keep-alive':
    case 'transfer-encoding':
    case 'te':
    case 'trailer':
    case 'upgrade':
      return true;
    default:
      return lower.startsWith('proxy-');
  }
}

/** Header names listed in a Connection header, other than the usual keep-alive/close. */
function extraConnectionTokens(value: string, into: string[] | undefined): string[] | undefined {
  for (const part of value.split(',')) {
    const token = part.trim().toLowerCase();
    if (token === '' || token === 'keep-alive' || token === 'close') continue;
    (into ??= []).push(token);
  }
  return into;
}

function without(headers: string[], names: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    if (!names.includes(headers[i]!.toLowerCase())) out.push(headers[i]!, headers[i + 1]!);
  }
  return out;
}

/** Answers with the JSON error body every Shoal HTTP edge uses. */
export function replyError(res: ServerResponse, status: number, code: ErrorCode, message: string, extra?: readonly string[]): void {
  if (res.headersSent) {
    res.destroy(); // a reply already under way can only be cut, so the client sees it is incomplete
    return;
  }
  const body = JSON.stringify({ error: { code, message } });
  const headers = ['content-type', 'application/json', 'content-length', String(Buffer.byteLength(body))];
  if (extra !== undefined) headers.push(...extra);
  res.writeHead(status, headers);
  res.end(body);
}

export interface RelayPlan {
  /** http.request or https.request. */
  send: (options: RequestOptions) => ClientRequest;
  /** Target, agent, method, path, headers (flat array) and `timeout` (idle ms). */
  options: RequestOptions & { timeout: number };
  head: RequestHead;
  maxBodyBytes: number;
  /** Added to the reply's headers (flat array). */
  replyHeaders: readonly string[] | undefined;
  /** Names the upstream in error messages: "instance abc", "import payment". */
  describe: string;
  /** Called once when the exchange is over; status 499 when the client left before the reply's head. */
  done: ((status: number, bytesIn: number, bytesOut: number) => void) | undefined;
}

/**
 * Relays `req` to the upstream and the reply to `res`, streaming both ways with
 * back-pressure. The timeout is an idle timeout (like nginx's proxy_read_timeout): silence
 * before the reply's head → 504; after it → the reply is cut. Upstream refusal → 502.
 * A body past maxBodyBytes → upstream aborted and 413 (or the reply cut if it has started).
 * A client that goes away aborts the upstream request.
 */
export function relay(req: IncomingMessage, res: ServerResponse, plan: RelayPlan): void {
  const hasBody = plan.head.chunked || plan.head.contentLength > 0;
  let bytesIn = 0;
  let bytesOut = 0;
  let timedOut = false;
  let retried = false;
  let stopped = false; // we gave up on the upstream (too large) and answered ourselves

  const onTimeout = (): void => {
    timedOut = true;
    up.destroy(new Error('upstream idle timeout'));
  };

  const onError = (err: NodeJS.ErrnoException): void => {
    if (stopped || res.writableFinished || res.destroyed) return;
    // A kept-alive connection the upstream closed just as we reused it: a request without a
    // body has not been seen by anyone, so it is safe to send once more on a new connection.
    if (!retried && !hasBody && !timedOut && !res.headersSent && up.reusedSocket && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) {
      retried = true;
      up = start();
      up.end();
      return;
    }
    if (timedOut) replyError(res, 504, 'timeout', `${plan.describe} did not answer within ${plan.options.timeout} ms`, plan.replyHeaders);
    else replyError(res, 502, 'unavailable', `${plan.describe} is not answering (${err.code ?? err.message})`, plan.replyHeaders);
  };

  const onResponse = (reply: IncomingMessage): void => {
    if (stopped) {
      reply.destroy();
      return;
    }
    res.writeHead(reply.statusCode ?? 502, responseHeaders(reply.rawHeaders, plan.replyHeaders));
    reply.on('data', (chunk: Buffer) => {
      bytesOut += chunk.length;
      if (!res.write(chunk)) reply.pause();
    });
    res.on('drain', () => reply.resume());
    reply.on('end', () => res.end());
    reply.on('error', noop);
    reply.on('close', () => {
      if (!reply.complete) res.destroy(); // the upstream died mid-reply: cut ours too
    });
  };

  const start = (): ClientRequest => {
    const request = plan.send(plan.options);
    request.on('response', onResponse);
    request.on('error', onError);
    request.on('timeout', onTimeout);
    return request;
  };

  let up = start();

  req.on('error', noop);
  res.on('close', () => {
    if (!res.writableFinished) up.destroy();
    plan.done?.(res.headersSent ? res.statusCode : 499, bytesIn, bytesOut);
  });

  if (!hasBody) {
    up.end();
    return;
  }
  req.on('data', (chunk: Buffer) => {
    if (stopped) return;
    bytesIn += chunk.length;
    if (bytesIn > plan.maxBodyBytes) {
      stopped = true;
      up.destroy();
      replyError(res, 413, 'too-large', `request body is larger than the limit of ${plan.maxBodyBytes} bytes`, ['connection', 'close']);
      return;
    }
    if (!up.write(chunk)) req.pause();
  });
  up.on('drain', () => req.resume());
  req.on('end', () => {
    if (!stopped) up.end();
  });
}

function noop(): void {}

/** Stops accepting, closes idle connections, gives busy ones a moment, then cuts them. */
export async function closeServer(server: Server, after: () => Promise<void>, graceMs = 1000): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  const timer = setTimeout(() => server.closeAllConnections(), graceMs);
  await closed;
  clearTimeout(timer);
  await after();
}
