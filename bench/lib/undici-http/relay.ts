// The streaming core shared by the host's forwarder and its import sockets: relay one HTTP
// request to an upstream and its reply back, without buffering either body (a small body
// with a declared length is read first and sent with the head, in one write). node:http
// serves the client side; the upstream side is an undici pool (upstream.ts). Flat raw-header
// arrays throughout (no header objects are built): this is the hot path of every message.
// Every reply made here rather than relayed carries the x-shoal-error mark
// (src/protocol/data-plane.ts).

import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import type { ErrorCode } from '../../../src/protocol/errors.ts';
import { ERROR_HEADER, ROUTE_HEADER, type DataPlaneError } from '../../../src/protocol/data-plane.ts';
import { readReplyHead, type ReplyHead } from './reply-head.ts';
import { classify, interim, staleReuse, type Upstream } from './upstream.ts';

export { ROUTE_HEADER };

/** Request bodies up to this size, with a declared length, are read whole and sent with the head. */
const SMALL_BODY = 16 * 1024;

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
  // A chunked body goes out chunked without the header: undici frames a body of unknown length itself.
  if (!sawHost && (drop === undefined || !drop.has('host'))) headers.push('host', defaultHost); // HTTP/1.1 servers refuse a request without Host
  return { headers: connectionTokens === undefined ? headers : without(headers, connectionTokens), contentLength, chunked, route };
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
  if (value.length <= 10) {
    const lower = value.toLowerCase(); // the usual case, one token: no split
    if (lower === 'keep-alive' || lower === 'close') return into;
  }
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

/** Answers with the JSON error body every Shoal HTTP edge uses, marked as the host's own with `reason`. */
export function replyError(res: ServerResponse, status: number, code: ErrorCode, reason: DataPlaneError, message: string, extra?: readonly string[]): void {
  if (res.headersSent) {
    res.destroy(); // a reply already under way can only be cut, so the client sees it is incomplete
    return;
  }
  const body = JSON.stringify({ error: { code, message } });
  const headers = ['content-type', 'application/json', 'content-length', String(Buffer.byteLength(body)), ERROR_HEADER, reason];
  if (extra !== undefined) headers.push(...extra);
  res.writeHead(status, headers);
  res.end(body);
}

export interface RelayPlan {
  /** The pool of connections to the endpoint. */
  upstream: Upstream;
  method: string;
  /** Request target sent upstream (origin form, starts with /). */
  path: string;
  head: RequestHead;
  maxBodyBytes: number;
  /** Added to the reply's headers (flat array, lower-case names), replacing any the upstream sent. */
  replyHeaders: readonly string[] | undefined;
  /** The upstream (an instance) may not mark replies as the host's own: its x-shoal-error header is dropped. */
  untrusted: boolean;
  /** Names the upstream in error messages: "instance abc", "import payment". */
  describe: string;
  /** Called once when the exchange is over; status 499 when the client left before the reply's head. */
  done: ((status: number, bytesIn: number, bytesOut: number) => void) | undefined;
}

/**
 * Relays `req` to the upstream and the reply to `res`, streaming both ways with
 * back-pressure. The timeout is an idle timeout (like nginx's proxy_read_timeout): silence
 * before the reply's head → 504; after it → the reply is cut. A client that leaves the
 * reply unread for as long is cut alike. Upstream refusal or an invalid reply → 502. A body
 * past maxBodyBytes → upstream aborted and 413. A client that goes away aborts the exchange.
 */
export function relay(req: IncomingMessage, res: ServerResponse, plan: RelayPlan): void {
  new Exchange(req, res, plan).start();
}

class Exchange implements Dispatcher.DispatchHandler {
  private readonly req: IncomingMessage;
  private readonly res: ServerResponse;
  private readonly plan: RelayPlan;
  private readonly hasBody: boolean;
  private abortFn: ((err?: Error) => void) | undefined = undefined;
  private resumeFn: (() => void) | undefined = undefined;
  private reply: ReplyHead | undefined = undefined;
  private bytesIn = 0;
  private bytesOut = 0;
  private retried = false;
  private tooLarge = false;
  /** The request body's reader while undici pulls it. */
  private bodyChunks: AsyncIterableIterator<Buffer> | undefined = undefined;
  /** Over: nothing more goes either way. */
  private finished = false;
  /** The client's side is full: the upstream is paused until it drains (or the timeout cuts it). */
  private drainTimer: ReturnType<typeof setTimeout> | undefined = undefined;

  constructor(req: IncomingMessage, res: ServerResponse, plan: RelayPlan) {
    this.req = req;
    this.res = res;
    this.plan = plan;
    this.hasBody = plan.head.chunked || plan.head.contentLength > 0;
  }

  start(): void {
    this.req.on('error', noop);
    this.res.on('close', () => this.onClientClose());
    const { contentLength } = this.plan.head;
    if (!this.hasBody) return this.send(null);
    if (contentLength > 0 && contentLength <= SMALL_BODY && contentLength <= this.plan.maxBodyBytes) {
      const chunks: Buffer[] = [];
      this.req.on('data', (chunk: Buffer) => {
        this.bytesIn += chunk.length;
        chunks.push(chunk);
      });
      this.req.on('end', () => {
        if (this.finished) return;
        if (this.bytesIn !== contentLength) return this.cut(); // node's parser stops this; be safe anyway
        this.send(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, this.bytesIn));
      });
      return;
    }
    this.send(this.body());
  }

  private send(body: Buffer | AsyncIterable<Buffer> | null): void {
    const { upstream } = this.plan;
    // undici's dispatch takes an async iterable body (its docs; its .d.ts names only Readable).
    const payload = body as Buffer | Readable | null;
    upstream.pool.dispatch(
      { method: this.plan.method, path: this.plan.path, headers: this.plan.head.headers, body: payload, headersTimeout: upstream.timeoutMs, bodyTimeout: upstream.timeoutMs },
      this,
    );
  }

  /**
   * The request body as undici pulls it (so nothing is read before the upstream is ready
   * for it), counted against the limit. The stream is not destroyed if undici stops early
   * (a reply that came first): node then reads and drops the rest.
   */
  private async *body(): AsyncGenerator<Buffer> {
    const chunks = this.req.iterator({ destroyOnReturn: false }) as AsyncIterableIterator<Buffer>;
    this.bodyChunks = chunks;
    for await (const chunk of chunks) {
      this.bytesIn += chunk.length;
      if (this.bytesIn > this.plan.maxBodyBytes) {
        this.tooLarge = true;
        throw new Error('request body over the limit'); // undici aborts the exchange; onError answers 413
      }
      yield chunk;
    }
  }

  // ---- undici's side ----

  onConnect(abort: (err?: Error) => void): void {
    this.abortFn = abort;
    if (this.finished) abort();
  }

  onHeaders(status: number, raw: Buffer[], resume: () => void): boolean {
    if (this.finished) return true;
    if (status < 200) return interim(status, this.abortFn);
    this.resumeFn = resume;
    try {
      const head = readReplyHead(status, raw, this.plan.method);
      const { replyHeaders, untrusted } = this.plan;
      const headers = replyHeaders === undefined && !untrusted ? head.headers : rewrite(head.headers, replyHeaders, untrusted);
      this.res.writeHead(head.status, headers);
      this.reply = head;
    } catch (e) {
      this.abortFn?.(e as Error); // onError answers 502 bad-reply
      return false;
    }
    return true;
  }

  onData(piece: Buffer): boolean {
    if (this.finished) return true;
    this.bytesOut += piece.length;
    const reply = this.reply!;
    if (reply.framing === 'length' && this.bytesOut === reply.length) {
      this.res.end(piece); // the last piece: one write, end included
      return true;
    }
    if (this.res.write(piece)) return true;
    // The client reads slower than the upstream sends: stop reading until it catches up.
    this.res.once('drain', () => {
      clearTimeout(this.drainTimer);
      this.drainTimer = undefined;
      this.resumeFn?.();
    });
    this.drainTimer = setTimeout(() => this.cut(), this.plan.upstream.timeoutMs);
    return false;
  }

  onComplete(): void {
    if (this.finished) return;
    this.finish();
    if (!this.res.writableEnded) this.res.end();
  }

  onError(err: Error & { code?: string }): void {
    if (this.finished) return;
    if (this.tooLarge) {
      this.finish();
      replyError(this.res, 413, 'too-large', 'too-large', `request body is larger than the limit of ${this.plan.maxBodyBytes} bytes`, ['connection', 'close']);
      return;
    }
    if (!this.retried && !this.hasBody && staleReuse(err, this.reply !== undefined)) {
      this.retried = true;
      this.send(null);
      return;
    }
    const { kind, code } = classify(err);
    switch (kind) {
      case 'bad-reply':
        return this.fail(502, 'bad-reply', `sent an invalid HTTP reply: ${err.message}`);
      case 'timeout':
        return this.fail(504, 'timeout', `did not answer within ${this.plan.upstream.timeoutMs} ms`);
      case 'refused':
        return this.fail(502, 'refused', `is not answering (${code})`);
      case 'lost':
        return this.fail(502, 'lost', code === 'ECONNRESET' && err.message === 'other side closed'
          ? (this.reply === undefined ? 'closed the connection without answering' : 'closed the connection before its reply was complete')
          : `is not answering (${code})`);
      default: {
        const never: never = kind;
        throw new Error(`unhandled failure ${String(never)}`);
      }
    }
  }

  // ---- the end ----

  private cut(): void {
    if (!this.finished) {
      this.finished = true;
      this.abortFn?.();
    }
    this.res.destroy();
  }

  /** Nothing more goes upstream; what the client still sends is read and dropped. */
  private finish(): void {
    this.finished = true;
    clearTimeout(this.drainTimer);
    if (!this.hasBody || this.req.readableEnded) return;
    const chunks = this.bodyChunks;
    this.bodyChunks = undefined;
    // A reader left attached would hold the stream paused: detach it, then let node drain.
    if (chunks?.return === undefined) this.req.resume();
    else chunks.return().then(() => this.req.resume(), () => this.req.resume());
  }

  private fail(status: 502 | 504, reason: DataPlaneError, message: string): void {
    this.finish();
    if (this.res.headersSent) {
      this.res.destroy(); // a reply already under way can only be cut, so the client sees it is incomplete
      return;
    }
    if (this.res.destroyed) return;
    replyError(this.res, status, status === 504 ? 'timeout' : 'unavailable', reason, `${this.plan.describe} ${message}`, this.plan.replyHeaders);
  }

  private onClientClose(): void {
    clearTimeout(this.drainTimer);
    if (!this.res.writableFinished && !this.finished) {
      this.finished = true;
      this.abortFn?.();
    }
    this.plan.done?.(this.res.headersSent ? this.res.statusCode : 499, this.bytesIn, this.bytesOut);
  }
}

/**
 * The upstream's headers with ours added; an upstream header of the same name is dropped
 * (an instance cannot pose as another), and so is its x-shoal-error when `untrusted` (an
 * instance cannot pose as the host).
 */
function rewrite(headers: string[], ours: readonly string[] | undefined, untrusted: boolean): string[] {
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    const lower = headers[i]!.toLowerCase();
    let clash = untrusted && lower === ERROR_HEADER;
    if (ours !== undefined) for (let j = 0; j < ours.length; j += 2) if (ours[j] === lower) clash = true;
    if (!clash) out.push(headers[i]!, headers[i + 1]!);
  }
  if (ours !== undefined) for (let j = 0; j < ours.length; j++) out.push(ours[j]!);
  return out;
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
