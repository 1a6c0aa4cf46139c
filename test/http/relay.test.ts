// The relay (src/http/relay.ts) against a scripted raw instance on a Unix socket: framing,
// interim replies, connection reuse, and every malformed, hostile or slow reply it must
// refuse. (The same suite passed against an undici variant (bench/http-client.md), with
// two differences of undici's: it refuses an unasked-for 100 Continue, and back-to-back
// requests may alternate between two connections.)
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer as createHttpServer, request, type IncomingMessage, type Server as HttpServer } from 'node:http';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { closeServer, createUpstream, readRequestHead, relay, type Upstream } from '../../src/http/index.ts';

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
let proxy: HttpServer;
let port: number;
let upstream: Upstream;
const newUpstream = (): Upstream => createUpstream({ origin: 'http://localhost', socketPath: join(dir, 'raw.sock'), timeoutMs: 2000 });
/** Drops the kept-alive connections, as the forwarder's forget() does. */
const forget = (): void => {
  upstream.destroy();
  upstream = newUpstream();
};

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'shoal-relay-'));
  instance = await startRawInstance(join(dir, 'raw.sock'));
  upstream = newUpstream();
  // A minimal proxy: each request relayed to the raw instance, as the forwarder does.
  proxy = createHttpServer((req, res) =>
    relay(req, res, {
      upstream,
      method: req.method!,
      path: req.url!,
      head: readRequestHead(req.rawHeaders),
      maxBodyBytes: 1024 * 1024,
      replyHeaders: ['x-shoal-instance', 'raw'],
      untrusted: true,
      describe: 'instance raw (service raw)',
      done: undefined,
    }),
  );
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  port = (proxy.address() as AddressInfo).port;
});

after(async () => {
  await closeServer(proxy, async () => upstream.destroy());
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
    const req = request({ host: '127.0.0.1', port, path, method, agent: false }, (res) => {
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
  forget(); // start on a fresh connection, whose first request is answered
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

test('a head dribbled a byte at a time never completes: 504 once the timeout for the whole head has passed', async () => {
  // A slowloris reply: each byte comes well within the timeout, the head never ends.
  scripts['/slow-head'] = (s) => {
    s.write('HTTP/1.1 200 OK\r\nx-slow: ');
    const timer = setInterval(() => (s.destroyed ? clearInterval(timer) : s.write('a')), 100);
    s.on('close', () => clearInterval(timer));
  };
  const r = await call('/slow-head');
  assert.equal(r.status, 504);
  assert.equal(r.headers['x-shoal-error'], 'timeout');
});

test('a body that stalls past the timeout is cut; the client sees an incomplete reply', async () => {
  scripts['/slow-body'] = (s) => s.write('HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc');
  const r = await call('/slow-body');
  assert.equal(r.status, 200);
  assert.equal(r.body, 'abc');
  assert.ok(r.error !== undefined, 'the reply is cut, not completed');
});

