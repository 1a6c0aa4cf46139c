// The one upstream client, two ways. Through the forwarder's relay against a scripted raw
// instance: framing, interim replies, connection reuse and every malformed reply it must
// refuse. Through `request` (the provider's link to a host) against a raw TCP server:
// framings, reuse, strictness, and whether a failed request may have been sent.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { request, type IncomingMessage } from 'node:http';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listenForwarder, type ListeningForwarder } from '../../../src/host/data-plane/forwarder.ts';
import { generateRouteKey, signRouteToken } from '../../../src/host/data-plane/route-token.ts';
import { ChunkedDecoder, createUpstream, parseReplyHead, ProtocolError, type ReplyHead, type Upstream } from '../../../src/host/data-plane/upstream.ts';

// The instance: for each request head it sees, it runs the script named by the path.
type Script = (socket: Socket, nth: number) => void;
const scripts: Record<string, Script> = {};
let connections = 0;

function startRawInstance(path: string): Promise<Server> {
  const server = createServer((socket) => {
    connections++;
    let buffered = '';
    let nth = 0;
    socket.on('error', () => {});
    socket.on('data', (d) => {
      buffered += d.toString('latin1');
      let end: number;
      while ((end = buffered.indexOf('\r\n\r\n')) !== -1) {
        const head = buffered.slice(0, end);
        buffered = buffered.slice(end + 4);
        const target = head.split(' ')[1]!;
        const script = scripts[target];
        if (script === undefined) socket.end('HTTP/1.1 500 No Script\r\ncontent-length: 0\r\n\r\n');
        else script(socket, nth++);
      }
    });
  });
  return new Promise((resolve) => server.listen(path, () => resolve(server)));
}

let dir: string;
let instance: Server;
let forwarder: ListeningForwarder;
const key = generateRouteKey();
const token = signRouteToken({ instance: 'raw', service: 'raw', expiresAt: Date.now() + 600_000 }, key);

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'shoal-up-'));
  instance = await startRawInstance(join(dir, 'raw.sock'));
  forwarder = await listenForwarder({
    host: '127.0.0.1',
    port: 0,
    keys: [key],
    resolveInstance: (id) => (id === 'raw' ? { socketPath: join(dir, 'raw.sock'), state: 'ready' } : undefined),
    requestTimeoutMs: 2000,
  });
});

after(async () => {
  await forwarder.close();
  instance.close();
  await rm(dir, { recursive: true, force: true });
});

interface Got {
  status: number;
  headers: IncomingMessage['headers'];
  body: string;
  error?: string;
}

function call(path: string, method = 'GET', body?: string): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: forwarder.address.port, path: `/i${path}`, method, agent: false, headers: { 'x-shoal-route': token } }, (res) => {
      let text = '';
      res.setEncoding('latin1');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: text }));
      res.on('error', (e) => resolve({ status: res.statusCode!, headers: res.headers, body: text, error: e.message }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const json = (g: Got): any => JSON.parse(g.body);

test('a chunked reply dribbled byte by byte arrives whole, and the connection is reused', async () => {
  const reply = 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nx-trailer: t\r\n\r\n';
  scripts['/dribble'] = (socket) => {
    let i = 0;
    const next = (): void => {
      if (i < reply.length) socket.write(reply[i++]!, 'latin1', () => setImmediate(next));
    };
    next();
  };
  const before = connections;
  const first = await call('/dribble');
  assert.equal(first.status, 200);
  assert.equal(first.body, 'hello world');
  assert.equal(first.headers['content-type'], 'text/plain');
  assert.equal(first.headers['x-trailer'], undefined);
  assert.equal((await call('/dribble')).body, 'hello world');
  assert.equal(connections - before, 1, 'the second request reused the connection');
});

test('interim 1xx replies are skipped; HEAD and 204 have no body; close-delimited bodies end at close', async () => {
  scripts['/continue'] = (s) => s.write('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok');
  scripts['/head'] = (s) => s.write('HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-h: 1\r\n\r\n');
  scripts['/nocontent'] = (s) => s.write('HTTP/1.1 204 No Content\r\n\r\n');
  scripts['/untilclose'] = (s) => s.end('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of this until the end');
  const c = await call('/continue');
  assert.equal(c.status, 201);
  assert.equal(c.body, 'ok');
  const h = await call('/head', 'HEAD');
  assert.equal(h.status, 200);
  assert.equal(h.headers['content-length'], '5');
  assert.equal(h.headers['x-h'], '1');
  assert.equal(h.body, '');
  const n = await call('/nocontent');
  assert.equal(n.status, 204);
  assert.equal(n.body, '');
  const u = await call('/untilclose');
  assert.equal(u.status, 200);
  assert.equal(u.body, 'all of this until the end');
});

test('malformed replies become 502 with a JSON body', async () => {
  const bad: Record<string, string> = {
    '/bad-status': 'HTTP/2 200 OK\r\n\r\n',
    '/garbage': 'hello there\r\n\r\n',
    '/obs-fold': 'HTTP/1.1 200 OK\r\nx-a: 1\r\n  folded\r\ncontent-length: 0\r\n\r\n',
    '/bad-name': 'HTTP/1.1 200 OK\r\nx a: 1\r\ncontent-length: 0\r\n\r\n',
    '/cl-and-te': 'HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n',
    '/two-lengths': 'HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd',
    '/bad-length': 'HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n',
    '/ctl-in-value': 'HTTP/1.1 200 OK\r\nx-a: a\x01b\r\ncontent-length: 0\r\n\r\n',
    '/switching': 'HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n',
    '/huge-head': `HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(70 * 1024)}`,
  };
  for (const [path, reply] of Object.entries(bad)) {
    scripts[path] = (s) => s.write(reply, 'latin1');
    const r = await call(path).catch((e: Error) => assert.fail(`${path}: ${e.message}`));
    assert.equal(r.status, 502, path);
    assert.equal(json(r).error.code, 'unavailable', path);
    assert.equal(r.headers['x-shoal-error'], 'bad-reply', path);
    assert.match(json(r).error.message, /instance raw \(service raw\) sent an invalid HTTP reply/, path);
  }
  // A chunked body broken after the head was passed on: the client's reply is cut, not completed.
  scripts['/bad-chunk'] = (s) => s.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n');
  scripts['/bad-chunk-later'] = (s) => s.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcXX');
  for (const path of ['/bad-chunk', '/bad-chunk-later']) {
    const cut = await call(path).catch((e: Error) => ({ status: 0, headers: {}, body: '', error: e.message }));
    assert.ok(cut.error !== undefined, `${path}: the client sees an incomplete reply`);
  }
});

test('an upstream that closes early: 502 before the head, a cut reply after it', async () => {
  scripts['/hangup'] = (s) => s.destroy();
  const r = await call('/hangup');
  assert.equal(r.status, 502);
  assert.equal(r.headers['x-shoal-error'], 'lost');
  assert.match(json(r).error.message, /closed the connection without answering/);
  scripts['/half'] = (s) => s.end('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b');
  const half = await call('/half');
  assert.equal(half.status, 200);
  assert.ok(half.error !== undefined);
  assert.equal(half.body, 'only ten b');
});

test('extra bytes past the declared length are dropped with the connection', async () => {
  scripts['/extra'] = (s) => s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsneaky');
  scripts['/plain'] = (s) => s.write('HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nplain');
  const before = connections;
  assert.equal((await call('/extra')).body, 'ok');
  const next = await call('/plain');
  assert.equal(next.body, 'plain', 'the smuggled reply never reaches the next request');
  assert.equal(connections - before, 2, 'the out-of-step connection was not reused');
});

test('a kept-alive connection closed under a bodiless request is retried once; one with a body is not', async () => {
  // Answer the first request on a connection, then drop the connection when another arrives on it.
  const flaky: Script = (s, nth) => {
    if (nth === 0) s.write('HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst');
    else s.destroy();
  };
  scripts['/flaky'] = flaky;
  assert.equal((await call('/flaky')).body, 'first');
  const retried = await call('/flaky');
  assert.equal(retried.status, 200, 'retried on a fresh connection');
  assert.equal(retried.body, 'first');

  scripts['/flaky-post'] = flaky;
  forwarder.forget('raw'); // start on a fresh connection, whose first request is answered
  assert.equal((await call('/flaky-post', 'POST', 'x')).body, 'first');
  const posted = await call('/flaky-post', 'POST', 'body');
  assert.equal(posted.status, 502, 'a request with a body may have been seen: not resent');
  assert.equal(posted.headers['x-shoal-error'], 'lost');
});

test('a Keep-Alive hint of 1 s or less stops reuse; Connection: close too', async () => {
  scripts['/short-hint'] = (s) => s.write('HTTP/1.1 200 OK\r\nkeep-alive: timeout=1\r\ncontent-length: 1\r\n\r\na');
  scripts['/close'] = (s) => s.write('HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\nb');
  for (const path of ['/short-hint', '/close']) {
    const before = connections;
    await call(path);
    await call(path);
    assert.equal(connections - before, 2, path);
  }
});

test('an instance that never answers → 504', async () => {
  scripts['/silent'] = () => {};
  const r = await call('/silent');
  assert.equal(r.status, 504);
  assert.match(json(r).error.message, /did not answer within 2000 ms/);
});

test('parseReplyHead: framing, hop-by-hop removal, keep-alive', () => {
  const h = parseReplyHead('HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-End: 2\r\nContent-Length: 7', 'GET')!;
  assert.deepEqual(h, { status: 200, headers: ['X-End', '2', 'Content-Length', '7'], framing: 'length', length: 7, keepAlive: true, keepAliveMs: 4000 });
  const chunked = parseReplyHead('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked', 'GET')!;
  assert.equal(chunked.framing, 'chunked');
  const http10 = parseReplyHead('HTTP/1.0 200 OK\r\ncontent-length: 1', 'GET')!;
  assert.equal(http10.keepAlive, false);
  assert.equal(parseReplyHead('HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1', 'GET')!.keepAlive, true);
  assert.equal(parseReplyHead('HTTP/1.1 100 Continue', 'GET'), undefined);
  assert.throws(() => parseReplyHead('HTTP/1.1 2000 OK', 'GET'), ProtocolError);
});

test('ChunkedDecoder: pieces, extensions, trailers, and where the body ends', () => {
  const d = new ChunkedDecoder();
  const out: string[] = [];
  const body = Buffer.from('3;a=b\r\nabc\r\n0\r\nt: 1\r\n\r\nNEXT');
  const used = d.push(body, (p) => out.push(p.toString()));
  assert.equal(out.join(''), 'abc');
  assert.ok(d.done);
  assert.equal(body.subarray(used).toString(), 'NEXT');
  assert.throws(() => new ChunkedDecoder().push(Buffer.from('3\nabc'), () => {}), ProtocolError);
});

// ---- request(): one whole request, its reply to callbacks ----

/** A raw TCP server that answers each request with `reply(requestText)`. */
async function rawServer(reply: (req: string, socket: Socket) => string | undefined) {
  const sockets = new Set<Socket>();
  let connections = 0;
  const server = createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buf = '';
    socket.on('data', (c) => {
      buf += c.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) return;
      const len = Number(/content-length: (\d+)/i.exec(buf)?.[1] ?? 0);
      if (buf.length < end + 4 + len) return;
      const req = buf.slice(0, end + 4 + len);
      buf = buf.slice(end + 4 + len);
      const out = reply(req, socket);
      if (out !== undefined) socket.write(out, 'latin1');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    connections: () => connections,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

const tcp = (port: number, timeoutMs = 2000): Upstream => createUpstream({ open: () => connect({ host: '127.0.0.1', port }), timeoutMs });

type Sent = { head: ReplyHead; body: string } | { error: string; sent: boolean; replied: boolean };

function send(link: Upstream, body = '{"a":1}', timeoutMs?: number): Promise<Sent> {
  return new Promise((resolve) => {
    let head: ReplyHead | undefined;
    const chunks: Buffer[] = [];
    link.request(
      `POST /i/Echo HTTP/1.1\r\nhost: x\r\ncontent-length: ${Buffer.byteLength(body)}`,
      Buffer.from(body),
      {
        onHead: (h) => (head = h),
        onData: (c) => chunks.push(c),
        onEnd: () => resolve({ head: head!, body: Buffer.concat(chunks).toString() }),
        onError: (e, sent, replied) => resolve({ error: e.code ?? e.message, sent, replied }),
      },
      timeoutMs,
    );
  });
}

test('request: content-length replies, kept alive and reused; the request arrives whole', async (t) => {
  let seen = '';
  const srv = await rawServer((req) => {
    seen = req;
    return 'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\nx-shoal-instance: i1\r\nkeep-alive: timeout=30\r\n\r\n{"a":1}';
  });
  t.after(() => srv.close());
  const link = tcp(srv.port);
  t.after(() => link.destroy());
  for (let i = 0; i < 3; i++) {
    const r = await send(link);
    assert.ok('head' in r);
    assert.equal(r.head.status, 200);
    assert.equal(r.body, '{"a":1}');
    assert.equal(r.head.framing, 'length');
    assert.equal(r.head.length, 7);
    assert.deepEqual(r.head.headers, ['content-type', 'application/json', 'content-length', '7', 'x-shoal-instance', 'i1'], 'hop-by-hop headers dropped');
  }
  assert.equal(srv.connections(), 1, 'one connection for three requests');
  assert.deepEqual(link.size, { idle: 1, open: 1 });
  assert.match(seen, /^POST \/i\/Echo HTTP\/1\.1\r\n.*content-length: 7\r\n\r\n\{"a":1\}$/s);
});

test('request: chunked replies are decoded; 1xx is skipped; until-close replies end with the connection', async (t) => {
  const srv = await rawServer((req, socket) => {
    if (req.includes('"close"')) {
      socket.end('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it');
      return undefined;
    }
    return 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length-x: 1\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\ntrailer: t\r\n\r\n';
  });
  t.after(() => srv.close());
  const link = tcp(srv.port);
  t.after(() => link.destroy());
  const chunked = await send(link);
  assert.ok('head' in chunked);
  assert.equal(chunked.body, 'abcde');
  assert.equal(chunked.head.framing, 'chunked');
  const close = await send(link, '"close"');
  assert.ok('head' in close);
  assert.equal(close.head.framing, 'close');
  assert.equal(close.body, 'all of it');
});

test('request: hostile replies fail the exchange with EPROTO and the connection is not reused', async (t) => {
  const replies = [
    'HTTP/2 200 OK\r\n\r\n',
    'hello there\r\n\r\n',
    'HTTP/1.1 200 OK\r\nbad header: x\r\ncontent-length: 0\r\n\r\n',
    'HTTP/1.1 200 OK\r\nx-a: 1\r\n  folded\r\ncontent-length: 0\r\n\r\n',
    'HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\nabc',
    'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n',
    'HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab',
    'HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n',
    'HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n',
    `HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(70 * 1024)}`,
  ];
  let n = 0;
  const srv = await rawServer(() => replies[n++]);
  t.after(() => srv.close());
  const link = tcp(srv.port);
  t.after(() => link.destroy());
  for (let i = 0; i < replies.length; i++) {
    const r = await send(link);
    assert.ok('error' in r, `reply ${i} refused`);
    assert.equal(r.error, 'EPROTO', `reply ${i}`);
    assert.equal(r.sent, true);
  }
  assert.equal(srv.connections(), replies.length, 'each refused reply cost its connection');
});

test('request: bytes past the reply are dropped with the connection', async (t) => {
  let n = 0;
  const srv = await rawServer(() => (n++ === 0 ? 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsneaky' : 'HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nplain'));
  t.after(() => srv.close());
  const link = tcp(srv.port);
  t.after(() => link.destroy());
  const first = await send(link);
  assert.ok('head' in first);
  assert.equal(first.body, 'ok');
  const next = await send(link);
  assert.ok('head' in next);
  assert.equal(next.body, 'plain', 'the smuggled reply never reaches the next request');
  assert.equal(srv.connections(), 2);
});

test('request: a peer that is not listening: not sent; one that closes without answering: sent', async (t) => {
  const srv = await rawServer((_req, socket) => {
    socket.destroy();
    return undefined;
  });
  const link = tcp(srv.port);
  t.after(() => link.destroy());
  const closed = await send(link);
  assert.ok('error' in closed);
  assert.equal(closed.sent, true);
  assert.equal(closed.replied, false);
  await srv.close();
  const refused = await send(link);
  assert.ok('error' in refused);
  assert.equal(refused.error, 'ECONNREFUSED');
  assert.equal(refused.sent, false);
});

test('request: a reply cut in its body fails as replied', async (t) => {
  const srv = await rawServer((_req, socket) => {
    socket.end('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b');
    return undefined;
  });
  t.after(() => srv.close());
  const link = tcp(srv.port);
  t.after(() => link.destroy());
  const r = await send(link);
  assert.ok('error' in r);
  assert.equal(r.error, 'ECONNRESET');
  assert.equal(r.replied, true);
});

test('request: silence past the request\'s timeout fails with ETIMEDOUT', async (t) => {
  const srv = await rawServer(() => undefined);
  t.after(() => srv.close());
  const link = tcp(srv.port, 60_000);
  t.after(() => link.destroy());
  const started = Date.now();
  const r = await send(link, '{}', 100);
  assert.ok('error' in r);
  assert.equal(r.error, 'ETIMEDOUT');
  assert.ok(Date.now() - started < 2000);
});

test('request: a reader paused on the last piece does not leave a paused connection in the pool', async (t) => {
  const srv = await rawServer(() => 'HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello');
  t.after(() => srv.close());
  const link = tcp(srv.port);
  t.after(() => link.destroy());
  await new Promise<void>((resolve, reject) => {
    const exchange = link.request('POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 2', Buffer.from('{}'), {
      onHead: () => {},
      onData: () => exchange.pause(), // a slow consumer; it never resumes
      onEnd: () => resolve(),
      onError: (e) => reject(e),
    });
  });
  const next = await send(link);
  assert.ok('head' in next, 'the reused connection reads again');
  assert.equal(next.body, 'hello');
  assert.equal(srv.connections(), 1);
});
