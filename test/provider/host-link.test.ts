// The provider's lean client to a host's data plane: framings (length, chunked, until
// close, none), keep-alive reuse, 1xx skipped, strictness on bad replies, and whether a
// failed request may have been sent.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { createHostLink, type ReplyHead } from '../../src/provider/host-link.ts';

/** A raw TCP server that answers each request with `reply(requestText)`. */
async function rawServer(reply: (req: string, socket: Socket) => string | undefined) {
  const sockets = new Set<Socket>();
  let connections = 0;
  const server = createNetServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
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
      if (out !== undefined) socket.write(out);
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

function send(port: number, body = '{"a":1}', link = createHostLink('127.0.0.1', port)) {
  return new Promise<{ head: ReplyHead; body: string } | { error: string; sent: boolean; replied: boolean }>((resolve) => {
    let head: ReplyHead | undefined;
    const chunks: Buffer[] = [];
    link.request(`POST /i/Echo HTTP/1.1\r\nhost: x\r\ncontent-length: ${Buffer.byteLength(body)}`, Buffer.from(body), 2000, {
      onHead: (h) => (head = h),
      onData: (c) => chunks.push(c),
      onEnd: () => resolve({ head: head!, body: Buffer.concat(chunks).toString() }),
      onError: (e, sent, replied) => resolve({ error: (e as NodeJS.ErrnoException).code ?? e.message, sent, replied }),
    });
  });
}

test('content-length replies, kept alive and reused; the request arrives whole', async (t) => {
  let seen = '';
  const srv = await rawServer((req) => {
    seen = req;
    return 'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\nx-shoal-instance: i1\r\ndate: x\r\n\r\n{"a":1}';
  });
  t.after(() => srv.close());
  const link = createHostLink('127.0.0.1', srv.port);
  t.after(() => link.close());
  for (let i = 0; i < 3; i++) {
    const r = await send(srv.port, '{"a":1}', link);
    assert.ok('head' in r);
    assert.equal(r.head.status, 200);
    assert.equal(r.body, '{"a":1}');
    assert.equal(r.head.length, 7);
    assert.equal(r.head.get('x-shoal-instance'), 'i1');
    assert.deepEqual(r.head.headers, ['content-type', 'application/json', 'content-length', '7', 'x-shoal-instance', 'i1'], 'date and hop-by-hop headers dropped');
  }
  assert.equal(srv.connections(), 1, 'one connection for three requests');
  assert.match(seen, /^POST \/i\/Echo HTTP\/1\.1\r\n.*content-length: 7\r\n\r\n\{"a":1\}$/s);
});

test('chunked replies are decoded; 1xx is skipped; until-close replies end with the connection', async (t) => {
  const srv = await rawServer((req, socket) => {
    if (req.includes('"close"')) {
      socket.end('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it');
      return undefined;
    }
    return 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length-x: 1\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\ntrailer: t\r\n\r\n';
  });
  t.after(() => srv.close());
  const chunked = await send(srv.port);
  assert.ok('head' in chunked);
  assert.equal(chunked.body, 'abcde');
  assert.equal(chunked.head.length, -1);
  const close = await send(srv.port, '"close"');
  assert.ok('head' in close);
  assert.equal(close.body, 'all of it');
});

test('bad replies fail the exchange: status line, header name, both framings, chunk size', async (t) => {
  const replies = [
    'HTTP/2 200 OK\r\n\r\n',
    'HTTP/1.1 200 OK\r\nbad header: x\r\ncontent-length: 0\r\n\r\n',
    'HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\nabc',
    'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n',
    'HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab',
  ];
  let n = 0;
  const srv = await rawServer(() => replies[n++]);
  t.after(() => srv.close());
  for (let i = 0; i < replies.length; i++) {
    const r = await send(srv.port);
    assert.ok('error' in r, `reply ${i} refused`);
    assert.equal(r.error, 'EPROTO');
    assert.equal(r.sent, true);
  }
});

test('a host that is not listening: not sent; a host that closes without answering: sent', async (t) => {
  const srv = await rawServer((_req, socket) => {
    socket.destroy();
    return undefined;
  });
  t.after(() => srv.close());
  const closed = await send(srv.port);
  assert.ok('error' in closed);
  assert.equal(closed.sent, true);
  assert.equal(closed.replied, false);
  const port = srv.port;
  await srv.close();
  const refused = await send(port);
  assert.ok('error' in refused);
  assert.equal(refused.error, 'ECONNREFUSED');
  assert.equal(refused.sent, false);
});

test('silence past the timeout fails with ETIMEDOUT', async (t) => {
  const srv = await rawServer(() => undefined);
  t.after(() => srv.close());
  const link = createHostLink('127.0.0.1', srv.port);
  t.after(() => link.close());
  const r = await new Promise<string>((resolve) => {
    link.request('POST /i/X HTTP/1.1\r\nhost: x\r\ncontent-length: 0', Buffer.alloc(0), 100, {
      onHead: () => {},
      onData: () => {},
      onEnd: () => resolve('ended'),
      onError: (e) => resolve((e as NodeJS.ErrnoException).code ?? ''),
    });
  });
  assert.equal(r, 'ETIMEDOUT');
});
