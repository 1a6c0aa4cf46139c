// The streaming core shared by the host's forwarder and its import sockets: relay one HTTP
// request to an upstream and its reply back, without buffering either body.
// node:http serves the client side; the upstream side is the lean client in upstream.ts.
// Flat raw-header arrays throughout (no header objects are built): this is the hot path
// of every message. Every reply made here rather than relayed carries the x-shoal-error
// mark (src/protocol/data-plane.ts).

import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { ErrorCode } from '../protocol/index.ts';
import { ERROR_HEADER, ROUTE_HEADER, type DataPlaneError } from '../protocol/index.ts';
import { HeadTimeout, ProtocolError, ReplyReader, type ReplyHead, type Upstream, type UpstreamConnection, type UpstreamOwner } from './upstream.ts';

export { ROUTE_HEADER };

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
 * back-pressure. The timeout is an idle timeout on the upstream connection (like nginx's
 * proxy_read_timeout): silence before the reply's head → 504; after it → the reply is cut.
 * A client that leaves the reply unread holds the upstream paused, so it is cut alike.
 * Upstream refusal or an
 * invalid reply → 502. A body past maxBodyBytes → upstream aborted and 413. A client that
 * goes away aborts the upstream exchange.
 */
export function relay(req: IncomingMessage, res: ServerResponse, plan: RelayPlan): void {
  new Exchange(req, res, plan).start();
}

class Exchange extends ReplyReader implements UpstreamOwner {
  private readonly req: IncomingMessage;
  private readonly res: ServerResponse;
  private readonly plan: RelayPlan;
  private readonly hasBody: boolean;
  private conn: UpstreamConnection | undefined;
  private bytesIn = 0;
  private bytesOut = 0;
  private retried = false;
  /** The whole request has been written upstream. */
  private requestSent = false;
  /** Some reply byte arrived on the current connection. */
  private gotBytes = false;
  /** Over: the connection is released or discarded and nothing more goes upstream. */
  private finished = false;
  private waitingDrain = false;

  constructor(req: IncomingMessage, res: ServerResponse, plan: RelayPlan) {
    super();
    this.req = req;
    this.res = res;
    this.plan = plan;
    this.hasBody = plan.head.chunked || plan.head.contentLength > 0;
  }

  start(): void {
    this.req.on('error', noop);
    this.res.on('close', () => this.onClientClose());
    this.send();
    if (this.hasBody) {
      this.req.on('data', (chunk: Buffer) => this.onRequestData(chunk));
      this.req.on('end', () => this.onRequestEnd());
    }
  }

  private send(fresh = false): void {
    const conn = this.plan.upstream.acquire(this, fresh);
    this.conn = conn;
    this.gotBytes = false;
    const h = this.plan.head.headers;
    let head = `${this.plan.method} ${this.plan.path} HTTP/1.1\r\n`;
    for (let i = 0; i < h.length; i += 2) head += `${h[i]}: ${h[i + 1]}\r\n`;
    // Header values hold the bytes node read, one char per byte: latin1 writes them back unchanged.
    conn.socket.write(head + '\r\n', 'latin1');
    if (!this.hasBody) this.requestSent = true;
  }

  // ---- request body: client → upstream ----

  private onRequestData(chunk: Buffer): void {
    if (this.finished) return; // the reply is over or failed; node drops the rest
    this.bytesIn += chunk.length;
    if (this.bytesIn > this.plan.maxBodyBytes) {
      this.finish(false);
      replyError(this.res, 413, 'too-large', 'too-large', `request body is larger than the limit of ${this.plan.maxBodyBytes} bytes`, ['connection', 'close']);
      return;
    }
    const socket = this.conn!.socket;
    let flowing: boolean;
    if (this.plan.head.chunked) {
      socket.cork();
      socket.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
      socket.write(chunk);
      flowing = socket.write('\r\n', 'latin1');
      socket.uncork();
    } else flowing = socket.write(chunk);
    if (!flowing) this.req.pause();
  }

  private onRequestEnd(): void {
    if (this.finished) return;
    if (this.plan.head.chunked) this.conn!.socket.write('0\r\n\r\n', 'latin1');
    this.requestSent = true;
  }

  onUpstreamDrain(): void {
    if (!this.finished && this.hasBody) this.req.resume();
  }

  // ---- reply: upstream → client ----

  onUpstreamData(chunk: Buffer): void {
    this.gotBytes = true;
    if (this.finished) return;
    try {
      this.readReply(chunk, this.plan.method, this.plan.upstream.timeoutMs);
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      if (e instanceof HeadTimeout) this.fail(504, 'timeout', `did not answer within ${this.plan.upstream.timeoutMs} ms`);
      else this.fail(502, 'bad-reply', `sent an invalid HTTP reply: ${e.message}`);
    }
  }

  protected replyHead(head: ReplyHead): void {
    if (head.keepAliveMs !== undefined) this.conn!.keepAliveMs = head.keepAliveMs;
    const { replyHeaders, untrusted } = this.plan;
    const headers = replyHeaders === undefined && !untrusted ? head.headers : rewriteReplyHeaders(head.headers, replyHeaders, untrusted);
    try {
      this.res.writeHead(head.status, headers);
    } catch (e) {
      throw new ProtocolError(`unusable reply header (${(e as Error).message})`);
    }
  }

  protected replyData(piece: Buffer): void {
    if (this.finished) return;
    this.bytesOut += piece.length;
    this.write(piece);
  }

  protected replyEnd(last: Buffer | undefined, clean: boolean): void {
    if (this.finished) return;
    if (last === undefined) this.res.end();
    else {
      this.bytesOut += last.length;
      this.res.end(last); // one write for a small reply whose body came with its head
    }
    this.finish(clean);
  }

  private write(piece: Buffer): void {
    if (this.res.write(piece) || this.waitingDrain) return;
    // The client reads slower than the upstream sends: stop reading until it catches up.
    this.waitingDrain = true;
    this.conn!.socket.pause();
    this.res.once('drain', () => {
      this.waitingDrain = false;
      this.conn?.socket.resume();
    });
  }

  onUpstreamEnd(): void {
    if (this.finished) return;
    if (this.reply?.framing === 'close') {
      this.res.end();
      this.finish(false);
      return;
    }
    if (this.canRetry()) this.retry();
    else this.fail(502, 'lost', this.reply === undefined ? 'closed the connection without answering' : 'closed the connection before its reply was complete');
  }

  onUpstreamError(err: NodeJS.ErrnoException): void {
    if (this.finished) return;
    if (this.canRetry() && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) this.retry();
    else {
      // Refused or missing socket: nothing reached the upstream. Any other failure may follow a delivered request.
      const refused = err.code === 'ECONNREFUSED' || err.code === 'ENOENT';
      this.fail(502, refused ? 'refused' : 'lost', `is not answering (${err.code ?? err.message})`);
    }
  }

  onUpstreamTimeout(): void {
    if (!this.finished) this.fail(504, 'timeout', `did not answer within ${this.plan.upstream.timeoutMs} ms`);
  }

  /**
   * A kept-alive connection the upstream closed just as we reused it: a request without a
   * body has not been seen by anyone, so it is safe to send once more on a new connection.
   */
  private canRetry(): boolean {
    return !this.retried && !this.hasBody && !this.gotBytes && this.reply === undefined && this.conn!.reused;
  }

  private retry(): void {
    this.retried = true;
    this.plan.upstream.discard(this.conn!);
    this.send(true); // other idle connections may be just as stale
  }

  // ---- the end ----

  /** The exchange is over; the connection goes back to the pool only if it is clean and in step. */
  private finish(clean: boolean): void {
    this.finished = true;
    const conn = this.conn;
    this.conn = undefined;
    if (conn === undefined) return;
    if (clean && this.requestSent && this.reply?.keepAlive === true) {
      if (this.waitingDrain) conn.socket.resume();
      this.plan.upstream.release(conn);
    } else {
      this.plan.upstream.discard(conn);
      if (this.hasBody) this.req.resume(); // let node read and drop what the client still sends
    }
  }

  private fail(status: 502 | 504, reason: DataPlaneError, message: string): void {
    this.finish(false);
    if (this.res.headersSent) {
      this.res.destroy(); // a reply already under way can only be cut, so the client sees it is incomplete
      return;
    }
    if (this.res.destroyed) return;
    replyError(this.res, status, status === 504 ? 'timeout' : 'unavailable', reason, `${this.plan.describe} ${message}`, this.plan.replyHeaders);
  }

  private onClientClose(): void {
    if (!this.res.writableFinished && !this.finished) this.finish(false);
    this.plan.done?.(this.res.headersSent ? this.res.statusCode : 499, this.bytesIn, this.bytesOut);
  }
}

/**
 * The upstream's headers with ours added; an upstream header of the same name is dropped
 * (an instance cannot pose as another), and so is its x-shoal-error when `untrusted` (an
 * instance cannot pose as the host).
 */
export function rewriteReplyHeaders(headers: string[], ours: readonly string[] | undefined, untrusted: boolean): string[] {
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
