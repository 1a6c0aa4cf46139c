// request(): one whole request, its reply to callbacks (the provider's link to each host's
// data plane), against a raw TCP server: framings, reuse, the hostile replies it must refuse,
// and whether a failed request may have been sent. Also the parser's own units.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { ChunkedDecoder, createUpstream, parseReplyHead, ProtocolError, type ReplyHead, type Upstream } from '../../src/http/index.ts';

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

const tcp = (port: number, timeoutMs = 2000): Upstream => createUpstream({ origin: `http://127.0.0.1:${port}`, timeoutMs });

type Sent = { head: ReplyHead; body: string } | { error: string; sent: boolean; replied: boolean };

function send(link: Upstream, body = '{"a":1}', timeoutMs?: number): Promise<Sent> {
  return new Promise((resolve) => {
    let head: ReplyHead | undefined;
    const chunks: Buffer[] = [];
    link.request(
      { method: 'POST', path: '/i/Echo', headers: ['host', 'x', 'content-length', String(Buffer.byteLength(body))], body: Buffer.from(body), ...(timeoutMs === undefined ? {} : { timeoutMs }) },
      {
        onHead: (h) => (head = h),
        onData: (c) => chunks.push(c),
        onEnd: () => resolve({ head: head!, body: Buffer.concat(chunks).toString() }),
        onError: (e, sent, replied) => resolve({ error: e.code ?? e.message, sent, replied }),
      },
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
    'HTTP/1.1 200 OK\r\nx-a: a\x01b\r\ncontent-length: 0\r\n\r\n',
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
    const exchange = link.request({ method: 'POST', path: '/x', headers: ['host', 'x', 'content-length', '2'], body: Buffer.from('{}') }, {
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

test('request: a head dribbled slower than the timeout fails with ETIMEDOUT, though each byte comes in time', async (t) => {
  const timers = new Set<ReturnType<typeof setInterval>>();
  const srv = await rawServer((_req, socket) => {
    socket.write('HTTP/1.1 200 OK\r\nx-slow: ');
    const timer = setInterval(() => (socket.destroyed ? clearInterval(timer) : socket.write('a')), 50);
    timers.add(timer);
    return undefined;
  });
  t.after(() => {
    for (const timer of timers) clearInterval(timer);
    return srv.close();
  });
  const link = tcp(srv.port, 500);
  t.after(() => link.destroy());
  const r = await send(link);
  assert.ok('error' in r);
  assert.equal(r.error, 'ETIMEDOUT');
  assert.equal(r.replied, false);
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

