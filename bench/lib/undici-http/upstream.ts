// One endpoint's pool of kept-alive HTTP/1.1 connections (an instance's Unix socket, a
// TCP/TLS address, a host's data plane), on undici, and `request`: one whole request whose
// reply goes to callbacks (the provider's link to each host's data plane).
//
// Bench only: the same interface as src/http's hand-written client, for bench/http-client.ts.
// It passes the same hostile-reply suite (see that bench's header) but costs more CPU per
// request, which is why src/http keeps the hand-written one on the data plane.

import { Pool, type Dispatcher } from 'undici';
import { ProtocolError, readReplyHead, type ReplyHead } from './reply-head.ts';

/** Largest reply head accepted. */
export const MAX_HEAD_BYTES = 64 * 1024;
/** Idle life of a pooled connection when the peer gives no Keep-Alive hint (node's servers close after 5 s). */
const DEFAULT_KEEPALIVE_MS = 4000;

export interface UpstreamOptions {
  /** http://host:port or https://host:port; for a Unix socket, any http origin (it names the Host). */
  origin: string;
  /** Connect to this Unix socket instead of the origin's address. */
  socketPath?: string;
  /** How long an exchange may wait on the endpoint with nothing moving. */
  timeoutMs: number;
  /** Most connections open at once; default unlimited (one per concurrent exchange). */
  maxConnections?: number;
}

/** What one exchange sends. */
export interface OutgoingRequest {
  method: string;
  /** Origin-form target, starts with /. */
  path: string;
  /** Flat [name, value, …]; Host included when it must differ from the origin's. */
  headers: string[];
  body?: Buffer | undefined;
  /** Overrides the pool's timeout for this exchange. */
  timeoutMs?: number;
}

export interface ReplyHandlers {
  onHead(head: ReplyHead): void;
  onData(chunk: Buffer): void;
  onEnd(): void;
  /**
   * The exchange failed; nothing follows. `sent`: the request may have reached the peer
   * (false only when no connection could be made). `replied`: onHead was called. The
   * error's code is the socket's (ECONNREFUSED, ECONNRESET, …), or EPROTO for an invalid
   * reply, ETIMEDOUT for silence past the timeout.
   */
  onError(error: NodeJS.ErrnoException, sent: boolean, replied: boolean): void;
}

/** A request under way. */
export interface UpstreamExchange {
  /** Stop reading the reply (the consumer is slow); `resume` reads on. */
  pause(): void;
  resume(): void;
  /** Give up: the connection is dropped and no handler is called again. */
  abort(): void;
}

/** One endpoint's pool. */
export class Upstream {
  readonly timeoutMs: number;
  readonly pool: Pool;

  constructor(options: UpstreamOptions) {
    this.timeoutMs = options.timeoutMs;
    this.pool = new Pool(options.origin, {
      ...(options.socketPath === undefined ? {} : { socketPath: options.socketPath }),
      connections: options.maxConnections ?? null,
      pipelining: 1,
      keepAliveTimeout: DEFAULT_KEEPALIVE_MS,
      keepAliveTimeoutThreshold: 1000,
      maxHeaderSize: MAX_HEAD_BYTES,
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
      connect: { timeout: options.timeoutMs },
    });
  }

  /** Sends one whole request and reads its reply into `handlers`. */
  request(req: OutgoingRequest, handlers: ReplyHandlers): UpstreamExchange {
    const exchange = new Request(this, req, handlers);
    exchange.send();
    return exchange;
  }

  /** Connections open and busy (tests and metrics). */
  get size(): { idle: number; open: number } {
    const { connected, running } = this.pool.stats;
    return { idle: connected - running, open: connected };
  }

  /** Closes every connection, idle or busy; busy exchanges fail as if the peer went away. */
  destroy(): void {
    this.pool.destroy().catch(() => undefined); // destroy() only rejects if already destroyed: nothing to do then
  }
}

/** A pool of kept-alive connections to one endpoint. */
export function createUpstream(options: UpstreamOptions): Upstream {
  return new Upstream(options);
}

/** How an undici error reads to callers: a socket-style code, and whether the peer may have seen the request. */
export function classify(err: Error & { code?: string }): { code: string; kind: 'refused' | 'timeout' | 'bad-reply' | 'lost' } {
  const code = err.code ?? '';
  if (err instanceof ProtocolError || err.name === 'HTTPParserError' || code.startsWith('HPE_') || code === 'UND_ERR_HEADERS_OVERFLOW' || code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH') return { code: 'EPROTO', kind: 'bad-reply' };
  if (code === 'UND_ERR_SOCKET' && /^bad (response|upgrade)$/.test(err.message)) return { code: 'EPROTO', kind: 'bad-reply' };
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') return { code: 'ETIMEDOUT', kind: 'timeout' };
  if (code === 'ECONNREFUSED' || code === 'ENOENT' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH' || code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'EAI_AGAIN' || code === 'ENOTFOUND')
    return { code: code === 'UND_ERR_CONNECT_TIMEOUT' ? 'ETIMEDOUT' : code, kind: 'refused' };
  return { code: code === 'UND_ERR_SOCKET' || code === '' ? 'ECONNRESET' : code, kind: 'lost' };
}

/**
 * A kept-alive connection the peer closed just as it was reused: nothing of the reply came,
 * and the socket had carried earlier replies. A request without a body was seen by no one
 * then, so it may go once more on another connection.
 */
export function staleReuse(err: Error & { code?: string; socket?: { bytesRead?: number } }, replied: boolean): boolean {
  return !replied && err.code === 'UND_ERR_SOCKET' && (err.socket?.bytesRead ?? 0) > 0 && !/^bad /.test(err.message);
}

/** An interim 1xx reply is skipped, except 101: an upgrade nobody asked for is a protocol break. */
export function interim(status: number, abort: ((err?: Error) => void) | undefined): boolean {
  if (status !== 101) return true;
  abort?.(new ProtocolError('101 Switching Protocols without an upgrade request'));
  return false;
}

export function errno(code: string, message: string, cause?: unknown): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(message, cause === undefined ? undefined : { cause });
  err.code = code;
  return err;
}

class Request implements Dispatcher.DispatchHandler, UpstreamExchange {
  private readonly upstream: Upstream;
  private readonly req: OutgoingRequest;
  private readonly handlers: ReplyHandlers;
  private abortFn: ((err?: Error) => void) | undefined = undefined;
  private resumeFn: (() => void) | undefined = undefined;
  private replied = false;
  private paused = false;
  private done = false;
  private retried = false;

  constructor(upstream: Upstream, req: OutgoingRequest, handlers: ReplyHandlers) {
    this.upstream = upstream;
    this.req = req;
    this.handlers = handlers;
  }

  send(): void {
    const timeout = this.req.timeoutMs ?? this.upstream.timeoutMs;
    this.upstream.pool.dispatch(
      {
        method: this.req.method,
        path: this.req.path,
        headers: this.req.headers,
        body: this.req.body === undefined || this.req.body.length === 0 ? null : this.req.body,
        headersTimeout: timeout,
        bodyTimeout: timeout,
      },
      this,
    );
  }

  onConnect(abort: (err?: Error) => void): void {
    this.abortFn = abort;
    if (this.done) abort();
  }

  onHeaders(status: number, raw: Buffer[], resume: () => void): boolean {
    if (this.done) return true;
    if (status < 200) return interim(status, this.abortFn);
    this.resumeFn = resume;
    let head: ReplyHead;
    try {
      head = readReplyHead(status, raw, this.req.method);
    } catch (e) {
      this.abortFn?.(e as Error);
      return false;
    }
    this.replied = true;
    this.handlers.onHead(head);
    return !this.paused;
  }

  onData(chunk: Buffer): boolean {
    if (this.done) return true;
    this.handlers.onData(chunk);
    return !this.paused;
  }

  onComplete(): void {
    if (this.done) return;
    this.done = true;
    this.handlers.onEnd();
  }

  onError(err: Error & { code?: string }): void {
    if (this.done) return;
    const noBody = this.req.body === undefined || this.req.body.length === 0;
    if (!this.retried && noBody && staleReuse(err, this.replied)) {
      this.retried = true;
      this.send();
      return;
    }
    this.done = true;
    const { code, kind } = classify(err);
    const message = kind === 'bad-reply' ? `invalid HTTP reply: ${err.message}` : kind === 'timeout' ? `no answer within ${this.req.timeoutMs ?? this.upstream.timeoutMs} ms` : err.message;
    this.handlers.onError(errno(code, message, err), kind !== 'refused', this.replied);
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.resumeFn?.();
  }

  abort(): void {
    if (this.done) return;
    this.done = true;
    this.abortFn?.();
  }
}
