// The data plane's HTTP/1.1 client: a pool of kept-alive connections to one endpoint (an
// instance's Unix socket, a TCP/TLS address, a host's data plane), a strict parser for the
// replies that come back on them, and two ways to use it: the relay streams a request
// through it (relay.ts; the host's forwarder and import sockets), and `request` sends one
// whole request and hands its reply to callbacks (the provider's link to each host).
//
// Why not undici, which the rest of the project uses (src/http/event-stream.ts, the registry
// client, the CLI): measured in one interleaved run (bench/http-client.md), undici costs
// 1.3–1.9× the CPU per request of this client on both data-plane hops, and adds ~0.03 ms of
// p50 per hop; it passes the same hostile-reply suite. Why not node:http's client: ~100 µs
// of CPU per request (ClientRequest, Agent, IncomingMessage, their events and streams).
//
// The peer may be a hostile instance (or a host relaying one). The parser refuses anything
// ambiguous (obs-fold, bad header names, control characters, a head over 64 KiB or slower
// than the timeout, Content-Length with Transfer-Encoding, conflicting lengths, bad chunk
// sizes) and such a connection is never reused. Each upstream has its own pool, so a
// misbehaving instance can only garble its own replies.

import { connect, isIP, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { caOption } from './tls.ts';

/** Largest reply head accepted. */
export const MAX_HEAD_BYTES = 64 * 1024;
const MAX_CHUNK_LINE = 4096;
/** Idle lifetime of a pooled connection when the upstream gives no Keep-Alive hint (node's servers close after 5 s). */
const DEFAULT_KEEPALIVE_MS = 4000;
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Control characters other than tab: never valid in a field value. */
const CTL = /[\x00-\x08\x0a-\x1f\x7f]/;
const STATUS_LINE = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: [^\r\n]*)?$/;

/** A kept-alive connection; `owner` is the exchange using it, undefined while idle. */
export class UpstreamConnection {
  readonly socket: Socket;
  readonly pool: Upstream;
  owner: UpstreamOwner | undefined;
  /** It has carried an exchange before: a failure before any reply byte may be the peer's idle close. */
  reused = false;
  idleSince = 0;
  keepAliveMs = DEFAULT_KEEPALIVE_MS;
  /** The connection was made: a failure after this may follow a request the peer received. */
  connected = false;
  /** The socket's idle timeout now. */
  timeoutMs: number;

  constructor(pool: Upstream, socket: Socket, timeoutMs: number) {
    this.pool = pool;
    this.socket = socket;
    this.timeoutMs = timeoutMs;
    socket.setNoDelay(true);
    // One idle timer for the connection's whole life, set once (re-arming it per exchange
    // costs a timer object each time): busy, it times the exchange out; idle in the pool,
    // it retires the connection. Unref'd: the client-facing side keeps the process alive.
    socket.setTimeout(timeoutMs);
    socket.unref();
    socket.once('connect', () => (this.connected = true));
    // Listeners are attached once per connection and dispatch to the current owner, so an
    // exchange costs no listener bookkeeping.
    socket.on('data', (chunk: Buffer) => {
      if (this.owner !== undefined) this.owner.onUpstreamData(chunk);
      else socket.destroy(); // bytes nobody asked for: the connection is out of step
    });
    socket.on('drain', () => this.owner?.onUpstreamDrain());
    socket.on('end', () => this.owner?.onUpstreamEnd());
    socket.on('timeout', () => {
      if (this.owner !== undefined) this.owner.onUpstreamTimeout();
      else socket.destroy();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => this.owner?.onUpstreamError(err));
    socket.on('close', () => {
      pool.forgetConnection(this);
      this.owner?.onUpstreamEnd();
    });
  }
}

export interface UpstreamOwner {
  onUpstreamData(chunk: Buffer): void;
  onUpstreamDrain(): void;
  /** The peer closed (end or close); called possibly more than once. */
  onUpstreamEnd(): void;
  onUpstreamTimeout(): void;
  onUpstreamError(err: NodeJS.ErrnoException): void;
}

export interface UpstreamOptions {
  /** http://host:port or https://host:port; with socketPath, any http origin. */
  origin: string;
  /** Connect to this Unix socket instead of the origin's address. */
  socketPath?: string;
  /** How long an exchange may wait on the endpoint with nothing moving (and for a whole reply head); also an idle connection's longest life. */
  timeoutMs: number;
  /** Idle connections kept. Default 64. */
  maxIdle?: number;
  /** CAs trusted for an https origin. Default: the system roots plus the operator's CA (src/http/tls.ts). */
  ca?: string[];
}

/** What one exchange of `request` sends. */
export interface OutgoingRequest {
  method: string;
  /** Origin-form target, starts with /. */
  path: string;
  /** Flat [name, value, …], Host included. */
  headers: readonly string[];
  body?: Buffer | undefined;
  /** Overrides the pool's timeout for this exchange (the connection keeps it: callers pass the same one each time). */
  timeoutMs?: number;
}

/** How to open a connection to `origin` (or to the Unix socket). */
function opener(options: UpstreamOptions): () => Socket {
  if (options.socketPath !== undefined) {
    const path = options.socketPath;
    return () => connect({ path });
  }
  const url = new URL(options.origin);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const tls = url.protocol === 'https:';
  const port = url.port === '' ? (tls ? 443 : 80) : Number(url.port);
  const ca = options.ca ?? caOption();
  return tls ? () => tlsConnect({ host, port, ALPNProtocols: ['http/1.1'], ...(isIP(host) === 0 ? { servername: host } : {}), ...(ca === undefined ? {} : { ca }) }) : () => connect({ host, port });
}

/** One endpoint's pool of kept-alive connections. */
export class Upstream {
  readonly timeoutMs: number;
  private readonly open: () => Socket;
  private readonly maxIdle: number;
  private readonly idle: UpstreamConnection[] = [];
  private readonly all = new Set<UpstreamConnection>();
  private destroyed = false;

  constructor(options: UpstreamOptions) {
    this.open = opener(options);
    this.timeoutMs = options.timeoutMs;
    this.maxIdle = options.maxIdle ?? 64;
  }

  /**
   * A connection for one exchange: the most recently used idle one that is still fresh,
   * else a new one (always a new one when `fresh`, as for a retry).
   */
  acquire(owner: UpstreamOwner, fresh = false): UpstreamConnection {
    const now = Date.now();
    let conn: UpstreamConnection | undefined;
    while (!fresh && (conn = this.idle.pop()) !== undefined) {
      if (!conn.socket.destroyed && conn.socket.readable && now - conn.idleSince < conn.keepAliveMs) break;
      conn.socket.destroy();
    }
    if (conn === undefined) {
      conn = new UpstreamConnection(this, this.open(), this.timeoutMs);
      this.all.add(conn);
      if (this.destroyed) conn.socket.destroy();
    } else {
      conn.reused = true;
    }
    conn.owner = owner;
    return conn;
  }

  /** Returns a connection whose exchange ended cleanly. */
  release(conn: UpstreamConnection): void {
    conn.owner = undefined;
    if (this.destroyed || this.idle.length >= this.maxIdle || conn.socket.destroyed || conn.keepAliveMs <= 0) {
      conn.socket.destroy();
      return;
    }
    conn.idleSince = Date.now();
    this.idle.push(conn);
  }

  /** Drops a connection that cannot be reused (failed, out of step, or abandoned mid-exchange). */
  discard(conn: UpstreamConnection): void {
    conn.owner = undefined;
    conn.socket.destroy();
  }

  forgetConnection(conn: UpstreamConnection): void {
    this.all.delete(conn);
    const i = this.idle.indexOf(conn);
    if (i !== -1) this.idle.splice(i, 1);
  }

  /** Sends one whole request and reads its reply into `handlers`. */
  request(req: OutgoingRequest, handlers: ReplyHandlers): UpstreamExchange {
    let head = `${req.method} ${req.path} HTTP/1.1`;
    const h = req.headers;
    for (let i = 0; i < h.length; i += 2) head += `\r\n${h[i]}: ${h[i + 1]}`;
    const exchange = new Request(this, head, req.body, handlers, req.timeoutMs ?? this.timeoutMs);
    exchange.send(false);
    return exchange;
  }

  /** Connections open and idle (tests and metrics). */
  get size(): { idle: number; open: number } {
    return { idle: this.idle.length, open: this.all.size };
  }

  /** Closes every connection, idle or busy; busy exchanges fail as if the peer went away. */
  destroy(): void {
    this.destroyed = true;
    for (const conn of [...this.all]) conn.socket.destroy();
    this.idle.length = 0;
  }
}

// ---- reply parsing ----

export type Framing = 'none' | 'length' | 'chunked' | 'close';

export interface ReplyHead {
  status: number;
  /** End-to-end headers, flat [name, value, …], hop-by-hop ones removed. */
  headers: string[];
  framing: Framing;
  /** For 'length'. */
  length: number;
  /** The peer allows the connection to carry another exchange. */
  keepAlive: boolean;
  /** From a Keep-Alive: timeout=N hint, in ms; undefined without one. */
  keepAliveMs: number | undefined;
}

export class ProtocolError extends Error {}

/** A reply head slower than the exchange's timeout (a slowloris peer): answered as a timeout, not a bad reply. */
export class HeadTimeout extends ProtocolError {}

/**
 * Parses one reply head (status line + headers, without the blank line). Returns
 * undefined for an interim 1xx reply, which the caller skips.
 */
export function parseReplyHead(text: string, requestMethod: string): ReplyHead | undefined {
  const lines = text.split('\r\n');
  const statusMatch = STATUS_LINE.exec(lines[0]!);
  if (statusMatch === null) throw new ProtocolError(`bad status line ${JSON.stringify(lines[0]!.slice(0, 100))}`);
  const http10 = statusMatch[1] === '0';
  const status = Number(statusMatch[2]);
  if (status === 101) throw new ProtocolError('101 Switching Protocols without an upgrade request');
  if (status < 200) return undefined;

  const headers: string[] = [];
  let length = -1;
  let transferEncoding: string | undefined;
  let keepAlive = !http10;
  let keepAliveMs: number | undefined;
  let connectionTokens: string[] | undefined;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    if (colon <= 0) throw new ProtocolError(`bad header line ${JSON.stringify(line.slice(0, 100))}`);
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) throw new ProtocolError(`bad header name ${JSON.stringify(name.slice(0, 100))}`);
    const value = trimOws(line, colon + 1);
    if (CTL.test(value)) throw new ProtocolError(`control character in header ${name.slice(0, 100)}`);
    const lower = name.toLowerCase();
    switch (lower) {
      case 'content-length': {
        if (!/^\d{1,15}$/.test(value)) throw new ProtocolError(`bad content-length ${JSON.stringify(value.slice(0, 40))}`);
        const n = Number(value);
        if (length !== -1 && length !== n) throw new ProtocolError('conflicting content-length headers');
        if (length !== -1) continue; // an identical repeat: pass one
        length = n;
        break;
      }
      case 'transfer-encoding':
        transferEncoding = transferEncoding === undefined ? value : `${transferEncoding}, ${value}`;
        continue;
      case 'connection':
        for (const part of value.split(',')) {
          const token = part.trim().toLowerCase();
          if (token === 'close') keepAlive = false;
          else if (token === 'keep-alive') keepAlive ||= http10;
          else if (token !== '') (connectionTokens ??= []).push(token);
        }
        continue;
      case 'keep-alive': {
        const hint = /(?:^|[,\s])timeout=(\d+)/i.exec(value);
        if (hint !== null) keepAliveMs = Math.max(0, Number(hint[1]) * 1000 - 1000);
        continue;
      }
      case 'te':
      case 'trailer':
      case 'upgrade':
        continue;
      default:
        if (lower.startsWith('proxy-')) continue;
    }
    headers.push(name, value);
  }

  let framing: Framing;
  if (requestMethod === 'HEAD' || status === 204 || status === 304) framing = 'none';
  else if (transferEncoding !== undefined) {
    if (length !== -1) throw new ProtocolError('both content-length and transfer-encoding');
    const codings = transferEncoding.toLowerCase().split(',');
    if (codings.at(-1)!.trim() === 'chunked') framing = 'chunked';
    else {
      framing = 'close';
      keepAlive = false;
    }
  } else if (length !== -1) framing = 'length';
  else {
    framing = 'close';
    keepAlive = false;
  }
  if (framing !== 'length' && framing !== 'none') {
    // Our reply is framed anew by node (chunked); the length header would lie.
    for (let i = 0; i < headers.length; i += 2) if (headers[i]!.toLowerCase() === 'content-length') headers.splice(i, 2);
  }
  return {
    status,
    headers: connectionTokens === undefined ? headers : withoutNames(headers, connectionTokens),
    framing,
    length: length === -1 ? 0 : length,
    keepAlive,
    keepAliveMs,
  };
}

/** line[from..] without leading and trailing spaces and tabs (not String#trim: it also eats 0xA0, a valid value byte). */
function trimOws(line: string, from: number): string {
  let start = from;
  let end = line.length;
  while (start < end && (line.charCodeAt(start) === 32 || line.charCodeAt(start) === 9)) start++;
  while (end > start && (line.charCodeAt(end - 1) === 32 || line.charCodeAt(end - 1) === 9)) end--;
  return line.slice(start, end);
}

function withoutNames(headers: string[], names: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) if (!names.includes(headers[i]!.toLowerCase())) out.push(headers[i]!, headers[i + 1]!);
  return out;
}

/** Finds the end of a head: the index of "\r\n\r\n", or -1. */
export function headEnd(buf: Buffer): number {
  return buf.indexOf('\r\n\r\n', 0, 'latin1');
}

const Chunk = { size: 0, data: 1, dataCr: 2, dataLf: 3, trailer: 4, done: 5 } as const;
type ChunkState = (typeof Chunk)[keyof typeof Chunk];

/**
 * Decodes a chunked body incrementally. `push` hands each piece of payload to `emit` and
 * returns the number of bytes of `buf` it used: less than buf.length only once the body is
 * complete (the rest belongs to no one).
 */
export class ChunkedDecoder {
  private state: ChunkState = Chunk.size;
  private remaining = 0;
  private line = '';

  get done(): boolean {
    return this.state === Chunk.done;
  }

  push(buf: Buffer, emit: (piece: Buffer) => void): number {
    let i = 0;
    const n = buf.length;
    while (i < n && this.state !== Chunk.done) {
      switch (this.state) {
        case Chunk.size:
        case Chunk.trailer: {
          const lf = buf.indexOf(10, i);
          const end = lf === -1 ? n : lf;
          this.line += buf.toString('latin1', i, end);
          if (this.line.length > MAX_CHUNK_LINE) throw new ProtocolError('chunk size or trailer line too long');
          if (lf === -1) return n;
          i = lf + 1;
          if (!this.line.endsWith('\r')) throw new ProtocolError('bare LF in chunked body');
          const line = this.line.slice(0, -1);
          this.line = '';
          if (this.state === Chunk.trailer) {
            if (line === '') this.state = Chunk.done;
            continue;
          }
          const semi = line.indexOf(';');
          const sizeText = (semi === -1 ? line : line.slice(0, semi)).trimEnd();
          if (!/^[0-9A-Fa-f]{1,12}$/.test(sizeText)) throw new ProtocolError(`bad chunk size ${JSON.stringify(sizeText.slice(0, 20))}`);
          this.remaining = parseInt(sizeText, 16);
          this.state = this.remaining === 0 ? Chunk.trailer : Chunk.data;
          continue;
        }
        case Chunk.data: {
          const take = Math.min(this.remaining, n - i);
          emit(buf.subarray(i, i + take));
          i += take;
          this.remaining -= take;
          if (this.remaining === 0) this.state = Chunk.dataCr;
          continue;
        }
        case Chunk.dataCr:
          if (buf[i] !== 13) throw new ProtocolError('chunk not followed by CRLF');
          i++;
          this.state = Chunk.dataLf;
          continue;
        case Chunk.dataLf:
          if (buf[i] !== 10) throw new ProtocolError('chunk not followed by CRLF');
          i++;
          this.state = Chunk.size;
          continue;
      }
    }
    return i;
  }
}

// ---- reading a reply ----

/**
 * Reads one reply off a connection as it arrives: the head (interim 1xx replies skipped),
 * then the body by its framing. Subclasses get the head, the body's pieces and its end;
 * the reader never touches the connection itself. One object per exchange: the exchange
 * is the reader.
 */
export abstract class ReplyReader {
  /** The reply's head, once it has arrived. */
  protected reply: ReplyHead | undefined = undefined;
  private headBuf: Buffer | undefined = undefined;
  /** When the first bytes of a head split across reads came (0: none pending). */
  private headStartedAt = 0;
  private remaining = 0;
  private chunks: ChunkedDecoder | undefined = undefined;
  private emitPiece: ((piece: Buffer) => void) | undefined = undefined;

  /** The head arrived; throwing a ProtocolError refuses it. */
  protected abstract replyHead(head: ReplyHead): void;
  /** A piece of the body; more follows. */
  protected abstract replyData(piece: Buffer): void;
  /**
   * The reply is complete. `last`: the body's final piece when it came with this call (one
   * write for a small reply). `clean`: no byte followed the reply, so the connection is
   * still in step. A reply delimited by the connection's close does not end here: the
   * owner sees the close.
   */
  protected abstract replyEnd(last: Buffer | undefined, clean: boolean): void;

  /**
   * Feeds bytes read from the connection. Throws ProtocolError on an invalid reply, and
   * HeadTimeout when a head has been arriving for longer than `timeoutMs` (a peer that
   * dribbles it a byte at a time stays inside any idle timeout).
   */
  protected readReply(chunk: Buffer, method: string, timeoutMs: number): void {
    let buf = chunk;
    while (this.reply === undefined) {
      if (this.headBuf !== undefined) {
        buf = Buffer.concat([this.headBuf, buf]);
        this.headBuf = undefined;
      }
      const end = headEnd(buf);
      if (end === -1) {
        if (buf.length > MAX_HEAD_BYTES) throw new ProtocolError(`reply head larger than ${MAX_HEAD_BYTES} bytes`);
        if (buf.length > 0) {
          // Only a head split across reads pays for the clock.
          const now = Date.now();
          if (this.headStartedAt === 0) this.headStartedAt = now;
          else if (now - this.headStartedAt > timeoutMs) throw new HeadTimeout(`reply head still incomplete after ${timeoutMs} ms`);
          this.headBuf = buf;
        }
        return;
      }
      this.headStartedAt = 0;
      const head = parseReplyHead(buf.toString('latin1', 0, end), method);
      buf = buf.subarray(end + 4);
      if (head === undefined) continue; // an interim 1xx reply: skipped
      this.reply = head;
      this.replyHead(head);
      if (head.framing === 'none' || (head.framing === 'length' && head.length === 0)) {
        this.replyEnd(undefined, buf.length === 0);
        return;
      }
      if (head.framing === 'length') this.remaining = head.length;
      else if (head.framing === 'chunked') this.chunks = new ChunkedDecoder();
    }
    if (buf.length === 0) return;
    switch (this.reply.framing) {
      case 'length': {
        const take = Math.min(this.remaining, buf.length);
        this.remaining -= take;
        const piece = take === buf.length ? buf : buf.subarray(0, take);
        if (this.remaining > 0) this.replyData(piece);
        else this.replyEnd(piece, take === buf.length);
        return;
      }
      case 'chunked': {
        const used = this.chunks!.push(buf, (this.emitPiece ??= (piece) => this.replyData(piece)));
        if (this.chunks!.done) this.replyEnd(undefined, used === buf.length);
        return;
      }
      case 'close':
        this.replyData(buf);
        return;
      case 'none':
        return;
    }
  }
}

// ---- one whole request, its reply to callbacks ----

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

class Request extends ReplyReader implements UpstreamOwner, UpstreamExchange {
  private readonly pool: Upstream;
  private readonly head: string;
  private readonly body: Buffer | undefined;
  private readonly handlers: ReplyHandlers;
  private readonly timeoutMs: number;
  private readonly method: string;
  private conn: UpstreamConnection | undefined = undefined;
  private done = false;
  private paused = false;
  private gotBytes = false;
  private retried = false;

  constructor(pool: Upstream, head: string, body: Buffer | undefined, handlers: ReplyHandlers, timeoutMs: number) {
    super();
    this.pool = pool;
    this.head = head;
    this.body = body === undefined || body.length === 0 ? undefined : body;
    this.handlers = handlers;
    this.timeoutMs = timeoutMs;
    this.method = head.slice(0, head.indexOf(' '));
  }

  send(fresh: boolean): void {
    const conn = this.pool.acquire(this, fresh);
    this.conn = conn;
    this.gotBytes = false;
    if (conn.timeoutMs !== this.timeoutMs) {
      conn.timeoutMs = this.timeoutMs;
      conn.socket.setTimeout(this.timeoutMs);
    }
    // One write for the whole request: head and body in one segment.
    const headBytes = Buffer.from(`${this.head}\r\n\r\n`, 'latin1');
    conn.socket.write(this.body === undefined ? headBytes : Buffer.concat([headBytes, this.body], headBytes.length + this.body.length));
  }

  onUpstreamData(chunk: Buffer): void {
    this.gotBytes = true;
    if (this.done) return;
    try {
      this.readReply(chunk, this.method, this.timeoutMs);
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      if (e instanceof HeadTimeout) this.fail(errno('ETIMEDOUT', `no complete answer within ${this.timeoutMs} ms`));
      else this.fail(errno('EPROTO', `invalid HTTP reply: ${e.message}`));
    }
  }

  protected replyHead(head: ReplyHead): void {
    if (head.keepAliveMs !== undefined) this.conn!.keepAliveMs = head.keepAliveMs;
    this.handlers.onHead(head);
  }

  protected replyData(piece: Buffer): void {
    if (!this.done) this.handlers.onData(piece);
  }

  protected replyEnd(last: Buffer | undefined, clean: boolean): void {
    if (this.done) return;
    if (last !== undefined) {
      this.handlers.onData(last);
      if (this.done) return; // aborted by the handler
    }
    this.finish(clean);
  }

  onUpstreamDrain(): void {}

  onUpstreamEnd(): void {
    if (this.done) return;
    if (this.reply?.framing === 'close') return this.finish(false);
    if (this.canRetry()) return this.retry();
    this.fail(errno('ECONNRESET', this.reply === undefined ? 'the peer closed the connection without answering' : 'the peer closed the connection in the middle of a reply'));
  }

  onUpstreamError(err: NodeJS.ErrnoException): void {
    if (this.done) return;
    if (this.canRetry() && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) return this.retry();
    this.fail(err);
  }

  onUpstreamTimeout(): void {
    if (!this.done) this.fail(errno('ETIMEDOUT', `no answer within ${this.timeoutMs} ms`));
  }

  /** As in the relay: a bodiless request on a reused connection the peer had just closed was seen by no one. */
  private canRetry(): boolean {
    return !this.retried && this.body === undefined && !this.gotBytes && this.reply === undefined && this.conn!.reused;
  }

  private retry(): void {
    this.retried = true;
    this.pool.discard(this.conn!);
    this.send(true);
  }

  private finish(clean: boolean): void {
    this.done = true;
    const conn = this.conn!;
    this.conn = undefined;
    if (clean && this.reply!.keepAlive) {
      if (this.paused) conn.socket.resume();
      this.pool.release(conn);
    } else this.pool.discard(conn);
    this.handlers.onEnd();
  }

  private fail(err: NodeJS.ErrnoException): void {
    this.done = true;
    const conn = this.conn!;
    this.conn = undefined;
    this.pool.discard(conn);
    this.handlers.onError(err, conn.connected || conn.reused, this.reply !== undefined);
  }

  pause(): void {
    if (this.conn === undefined || this.paused) return;
    this.paused = true;
    this.conn.socket.pause();
  }

  resume(): void {
    if (this.conn === undefined || !this.paused) return;
    this.paused = false;
    this.conn.socket.resume();
  }

  abort(): void {
    if (this.done) return;
    this.done = true;
    const conn = this.conn;
    this.conn = undefined;
    if (conn !== undefined) this.pool.discard(conn);
  }
}

function errno(code: string, message: string): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(message);
  err.code = code;
  return err;
}

/** A pool of kept-alive connections to one endpoint. */
export function createUpstream(options: UpstreamOptions): Upstream {
  return new Upstream(options);
}
