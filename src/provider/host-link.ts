// The provider's side of its link to a host's data plane: a small HTTP/1.1 client over a
// pool of kept-alive TCP connections, one pool per host. Why not node:http's client:
// measured here it is most of the provider's CPU per forwarded message (ClientRequest,
// Agent, IncomingMessage and their streams); a request here is one socket write of a
// prebuilt head plus the body, and the reply is parsed straight off the socket.
//
// The peer is a Shoal host's forwarder, but what it relays is an instance's reply, so
// the parser is strict all the same: a bad status line, a bad header, a head over 64 KiB,
// Content-Length with Transfer-Encoding, or a bad chunk size fails the exchange and the
// connection is never reused.
import { connect, type Socket } from 'node:net';

const MAX_HEAD = 64 * 1024;
/** Idle connections are closed after this (the host keeps them 30 s). */
const IDLE_MS = 4000;
const MAX_IDLE = 256;
const STATUS_LINE = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: [^\r\n]*)?$/;
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-connection', 'date']);

export interface ReplyHead {
  status: number;
  /** End-to-end headers, flat [name, value, …]; hop-by-hop ones and Date removed. */
  headers: string[];
  /** Content-Length when the reply has one, else -1 (chunked or until close). */
  length: number;
  /** The value of a header (lower-case name), if present. */
  get(name: string): string | undefined;
}

export interface ExchangeHandlers {
  onHead(head: ReplyHead): void;
  onData(chunk: Buffer): void;
  onEnd(): void;
  /**
   * The exchange failed. `sent`: some of the request may have reached the host (false only
   * when the connection could not be made at all). `replied`: the reply had begun.
   */
  onError(error: NodeJS.ErrnoException, sent: boolean, replied: boolean): void;
}

export interface Exchange {
  pause(): void;
  resume(): void;
  abort(): void;
}

export interface HostLink {
  /** Sends one request (`head` is the request line and headers, without the blank line). */
  request(head: string, body: Buffer, timeoutMs: number, handlers: ExchangeHandlers): Exchange;
  /** Closes every connection. */
  close(): void;
  readonly size: { idle: number; open: number };
}

class LinkError extends Error {
  code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

type Framing = 'none' | 'length' | 'chunked' | 'close';

/** One exchange on one connection: parses the reply as it arrives. */
class Conversation implements Exchange {
  private readonly link: Link;
  private readonly handlers: ExchangeHandlers;
  readonly conn: Conn;
  private head: Buffer | undefined;
  private framing: Framing = 'none';
  private remaining = 0;
  private keepAlive = true;
  private replied = false;
  private done = false;
  private chunk = { state: 'size' as 'size' | 'data' | 'cr' | 'lf' | 'trailer', left: 0, line: '' };

  constructor(link: Link, conn: Conn, handlers: ExchangeHandlers) {
    this.link = link;
    this.conn = conn;
    this.handlers = handlers;
  }

  data(buf: Buffer): void {
    if (this.done) return;
    if (!this.replied) {
      const all = this.head === undefined ? buf : Buffer.concat([this.head, buf]);
      const end = all.indexOf('\r\n\r\n', 0, 'latin1');
      if (end === -1) {
        if (all.length > MAX_HEAD) return this.fail(new LinkError('EPROTO', 'reply head larger than 64 KiB'));
        this.head = all;
        return;
      }
      this.head = undefined;
      let parsed: ReplyHead | undefined;
      try {
        parsed = this.parseHead(all.toString('latin1', 0, end));
      } catch (e) {
        return this.fail(e as LinkError);
      }
      const rest = all.subarray(end + 4);
      if (parsed === undefined) {
        // 1xx: skip it and parse what follows.
        if (rest.length > 0) this.data(rest);
        return;
      }
      this.replied = true;
      this.handlers.onHead(parsed);
      if (this.done) return;
      if (this.framing === 'none' || (this.framing === 'length' && this.remaining === 0)) {
        this.finish();
        if (rest.length > 0) this.conn.socket.destroy(); // bytes nobody asked for
        return;
      }
      if (rest.length > 0) this.body(rest);
      return;
    }
    this.body(buf);
  }

  private body(buf: Buffer): void {
    switch (this.framing) {
      case 'length': {
        const take = Math.min(this.remaining, buf.length);
        if (take > 0) this.handlers.onData(take === buf.length ? buf : buf.subarray(0, take));
        this.remaining -= take;
        if (this.remaining === 0 && !this.done) {
          if (take < buf.length) this.keepAlive = false;
          this.finish();
        }
        return;
      }
      case 'close':
        this.handlers.onData(buf);
        return;
      case 'chunked':
        try {
          this.dechunk(buf);
        } catch (e) {
          this.fail(e as LinkError);
        }
        return;
      default:
        this.conn.socket.destroy();
    }
  }

  private dechunk(buf: Buffer): void {
    const c = this.chunk;
    let i = 0;
    while (i < buf.length && !this.done) {
      if (c.state === 'size' || c.state === 'trailer') {
        const lf = buf.indexOf(10, i);
        const end = lf === -1 ? buf.length : lf;
        c.line += buf.toString('latin1', i, end);
        if (c.line.length > 4096) throw new LinkError('EPROTO', 'chunk line too long');
        if (lf === -1) return;
        i = lf + 1;
        if (!c.line.endsWith('\r')) throw new LinkError('EPROTO', 'bare LF in a chunked body');
        const line = c.line.slice(0, -1);
        c.line = '';
        if (c.state === 'trailer') {
          if (line === '') {
            if (i < buf.length) this.keepAlive = false;
            this.finish();
          }
          continue;
        }
        const semi = line.indexOf(';');
        const size = (semi === -1 ? line : line.slice(0, semi)).trim();
        if (!/^[0-9A-Fa-f]{1,12}$/.test(size)) throw new LinkError('EPROTO', `bad chunk size ${JSON.stringify(size.slice(0, 20))}`);
        c.left = parseInt(size, 16);
        c.state = c.left === 0 ? 'trailer' : 'data';
      } else if (c.state === 'data') {
        const take = Math.min(c.left, buf.length - i);
        this.handlers.onData(buf.subarray(i, i + take));
        i += take;
        c.left -= take;
        if (c.left === 0) c.state = 'cr';
      } else if (c.state === 'cr') {
        if (buf[i] !== 13) throw new LinkError('EPROTO', 'chunk not followed by CRLF');
        i++;
        c.state = 'lf';
      } else {
        if (buf[i] !== 10) throw new LinkError('EPROTO', 'chunk not followed by CRLF');
        i++;
        c.state = 'size';
      }
    }
  }

  private parseHead(text: string): ReplyHead | undefined {
    const lines = text.split('\r\n');
    const m = STATUS_LINE.exec(lines[0]!);
    if (m === null) throw new LinkError('EPROTO', `bad status line ${JSON.stringify(lines[0]!.slice(0, 80))}`);
    const status = Number(m[2]);
    if (status === 101) throw new LinkError('EPROTO', 'unexpected 101');
    if (status < 200) return undefined;
    const headers: string[] = [];
    const lower = new Map<string, string>();
    let length = -1;
    let te: string | undefined;
    this.keepAlive = m[1] === '1';
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i]!;
      const colon = line.indexOf(':');
      if (colon <= 0) throw new LinkError('EPROTO', `bad header line ${JSON.stringify(line.slice(0, 80))}`);
      const name = line.slice(0, colon);
      if (!TOKEN.test(name)) throw new LinkError('EPROTO', `bad header name ${JSON.stringify(name.slice(0, 80))}`);
      const value = line.slice(colon + 1).trim();
      const key = name.toLowerCase();
      if (key === 'content-length') {
        if (!/^\d{1,15}$/.test(value)) throw new LinkError('EPROTO', 'bad content-length');
        const n = Number(value);
        if (length !== -1 && length !== n) throw new LinkError('EPROTO', 'conflicting content-length headers');
        if (length !== -1) continue;
        length = n;
      } else if (key === 'transfer-encoding') {
        te = te === undefined ? value : `${te}, ${value}`;
      } else if (key === 'connection') {
        for (const t of value.toLowerCase().split(',')) {
          if (t.trim() === 'close') this.keepAlive = false;
          else if (t.trim() === 'keep-alive' && m[1] === '0') this.keepAlive = true;
        }
      }
      if (!lower.has(key)) lower.set(key, value);
      if (!HOP_BY_HOP.has(key)) headers.push(name, value);
    }
    if (status === 204 || status === 304) this.framing = 'none';
    else if (te !== undefined) {
      if (length !== -1) throw new LinkError('EPROTO', 'both content-length and transfer-encoding');
      if (te.toLowerCase().split(',').at(-1)!.trim() === 'chunked') this.framing = 'chunked';
      else {
        this.framing = 'close';
        this.keepAlive = false;
      }
    } else if (length !== -1) {
      this.framing = 'length';
      this.remaining = length;
    } else {
      this.framing = 'close';
      this.keepAlive = false;
    }
    if (this.framing !== 'length' && this.framing !== 'none') {
      for (let i = 0; i < headers.length; i += 2) if (headers[i]!.toLowerCase() === 'content-length') headers.splice(i, 2);
    }
    return { status, headers, length: this.framing === 'length' ? length : this.framing === 'none' ? 0 : -1, get: (n) => lower.get(n) };
  }

  /** The peer closed the connection. */
  ended(): void {
    if (this.done) return;
    if (this.replied && this.framing === 'close') {
      this.keepAlive = false;
      return this.finish();
    }
    const err = new LinkError('ECONNRESET', this.replied ? 'the host closed the connection in the middle of a reply' : 'the host closed the connection without answering');
    this.fail(err);
  }

  timedOut(): void {
    this.fail(new LinkError('ETIMEDOUT', 'the host did not answer in time'));
  }

  errored(err: NodeJS.ErrnoException): void {
    this.fail(err);
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    this.link.release(this.conn, this.keepAlive);
    this.handlers.onEnd();
  }

  fail(err: NodeJS.ErrnoException): void {
    if (this.done) return;
    this.done = true;
    this.link.discard(this.conn);
    this.handlers.onError(err, this.conn.connected || this.conn.reused, this.replied);
  }

  pause(): void {
    this.conn.socket.pause();
  }

  resume(): void {
    this.conn.socket.resume();
  }

  abort(): void {
    if (this.done) return;
    this.done = true;
    this.link.discard(this.conn);
  }
}

interface Conn {
  socket: Socket;
  owner: Conversation | undefined;
  connected: boolean;
  reused: boolean;
  idleTimer: ReturnType<typeof setTimeout> | undefined;
}

class Link implements HostLink {
  private readonly host: string;
  private readonly port: number;
  private readonly idle: Conn[] = [];
  private readonly all = new Set<Conn>();
  private closed = false;

  constructor(host: string, port: number) {
    this.host = host;
    this.port = port;
  }

  get size() {
    return { idle: this.idle.length, open: this.all.size };
  }

  request(head: string, body: Buffer, timeoutMs: number, handlers: ExchangeHandlers): Exchange {
    let conn = this.idle.pop();
    while (conn !== undefined && (conn.socket.destroyed || !conn.socket.writable)) conn = this.idle.pop();
    if (conn === undefined) conn = this.open();
    else {
      if (conn.idleTimer) clearTimeout(conn.idleTimer);
      conn.idleTimer = undefined;
      conn.reused = true;
      conn.socket.ref();
    }
    const talk = new Conversation(this, conn, handlers);
    conn.owner = talk;
    conn.socket.setTimeout(timeoutMs);
    const headBytes = Buffer.from(`${head}\r\n\r\n`, 'latin1');
    conn.socket.write(body.length === 0 ? headBytes : Buffer.concat([headBytes, body], headBytes.length + body.length));
    if (this.closed) conn.socket.destroy();
    return talk;
  }

  private open(): Conn {
    const socket = connect({ host: this.host, port: this.port, noDelay: true });
    const conn: Conn = { socket, owner: undefined, connected: false, reused: false, idleTimer: undefined };
    this.all.add(conn);
    socket.once('connect', () => {
      conn.connected = true;
    });
    socket.on('data', (buf: Buffer) => {
      if (conn.owner !== undefined) conn.owner.data(buf);
      else socket.destroy(); // bytes nobody asked for: out of step
    });
    socket.on('timeout', () => conn.owner?.timedOut());
    socket.on('error', (err: NodeJS.ErrnoException) => conn.owner?.errored(err));
    socket.on('end', () => conn.owner?.ended());
    socket.on('close', () => {
      this.all.delete(conn);
      const i = this.idle.indexOf(conn);
      if (i !== -1) this.idle.splice(i, 1);
      if (conn.idleTimer) clearTimeout(conn.idleTimer);
      conn.owner?.ended();
    });
    return conn;
  }

  release(conn: Conn, keepAlive: boolean): void {
    conn.owner = undefined;
    if (!keepAlive || this.closed || this.idle.length >= MAX_IDLE || conn.socket.destroyed) {
      conn.socket.destroy();
      return;
    }
    conn.socket.setTimeout(0);
    conn.socket.unref();
    conn.idleTimer = setTimeout(() => conn.socket.destroy(), IDLE_MS);
    conn.idleTimer.unref();
    this.idle.push(conn);
  }

  discard(conn: Conn): void {
    conn.owner = undefined;
    conn.socket.destroy();
  }

  close(): void {
    this.closed = true;
    for (const c of [...this.all]) c.socket.destroy();
    this.idle.length = 0;
  }
}

export function createHostLink(host: string, port: number): HostLink {
  return new Link(host, port);
}
