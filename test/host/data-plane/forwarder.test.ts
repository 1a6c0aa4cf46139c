import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, request, Agent, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listenForwarder, type ForwardEvent, type InstanceState, type ListeningForwarder } from '../../../src/host/data-plane/forwarder.ts';
import { generateRouteKey, signRouteToken } from '../../../src/host/data-plane/route-token.ts';

// A fake instance: any HTTP server on a Unix socket is what the forwarder talks to.
interface FakeInstance {
  socketPath: string;
  server: Server;
  connections: number;
  requests: number;
  closedEarly: string[];
  seen: string[];
}

async function startInstance(socketPath: string): Promise<FakeInstance> {
  const fake: FakeInstance = { socketPath, server: undefined as unknown as Server, connections: 0, requests: 0, closedEarly: [], seen: [] };
  fake.server = createServer((req, res) => {
    fake.requests++;
    fake.seen.push(new URL(req.url ?? '/', 'http://x').pathname);
    instanceHandler(fake, req, res);
  });
  fake.server.on('connection', () => fake.connections++);
  await new Promise<void>((resolve) => fake.server.listen(socketPath, resolve));
  return fake;
}

function instanceHandler(fake: FakeInstance, req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url ?? '/', 'http://x');
  switch (url.pathname) {
    case '/echo':
      res.writeHead(200, { 'content-type': req.headers['content-type'] ?? 'application/octet-stream' });
      req.pipe(res);
      return;
    case '/hash': {
      const hash = createHash('sha256');
      let bytes = 0;
      req.on('data', (c: Buffer) => {
        bytes += c.length;
        hash.update(c);
      });
      req.on('end', () => json(res, 200, { bytes, sha256: hash.digest('hex') }));
      req.on('close', () => {
        if (!req.complete) fake.closedEarly.push(url.pathname);
      });
      return;
    }
    case '/headers':
      json(res, 200, { method: req.method, url: req.url, rawHeaders: req.rawHeaders });
      return;
    case '/teapot':
      res.writeHead(418, [
        'x-custom', 'yes',
        'set-cookie', 'a=1',
        'set-cookie', 'b=2',
        'connection', 'keep-alive, x-hop',
        'x-hop', 'drop me',
        'keep-alive', 'timeout=5',
        'proxy-thing', 'drop me too',
        'content-type', 'text/plain',
      ]);
      res.end('short and stout');
      return;
    case '/slow':
      return; // never answers
    case '/spoof':
      res.writeHead(200, { 'x-shoal-instance': 'someone-else', 'content-length': 2 });
      res.end('ok');
      return;
    case '/spoof-error': {
      // Poses as the host: "gone" in any letter case, with a body like the forwarder's own.
      const text = JSON.stringify({ error: { code: 'not-found', message: 'instance x (service y) is not on this host' } });
      res.writeHead(404, ['x-shoal-error', 'gone', 'X-Shoal-Error', 'refused', 'content-type', 'application/json', 'content-length', String(Buffer.byteLength(text))]);
      res.end(text);
      return;
    }
    case '/spoof-error-chunked':
      res.writeHead(502, ['X-SHOAL-ERROR', 'lost', 'x-kept', 'yes']);
      res.end('no');
      return;
    case '/early':
      // Answers at once without reading the body.
      res.writeHead(200, { 'content-length': 5 });
      res.end('early');
      return;
    case '/flood': {
      // Writes 50 MB as fast as the reader lets it; counts what it got out.
      const chunk = Buffer.alloc(256 * 1024, 2);
      res.writeHead(200, { 'content-length': 50 * 1024 * 1024 });
      flood.written = 0;
      const pump = (): void => {
        while (flood.written < 50 * 1024 * 1024) {
          flood.written += chunk.length;
          if (!res.write(chunk)) {
            res.once('drain', pump);
            return;
          }
        }
        res.end();
      };
      pump();
      return;
    }
    case '/stall': {
      // Reads nothing until the test calls stall.reading(), then counts the body.
      req.pause();
      let bytes = 0;
      stall.reading = () => {
        req.on('data', (c: Buffer) => (bytes += c.length));
        req.on('end', () => json(res, 200, { bytes }));
        req.resume();
      };
      return;
    }
    case '/wait':
      req.resume();
      res.on('close', () => {
        if (!res.writableFinished) fake.closedEarly.push(url.pathname);
      });
      return; // answers only if the client stays… it will not
    default:
      json(res, 200, { ok: true, path: req.url });
  }
}

const stall: { reading: (() => void) | undefined } = { reading: undefined };
const flood = { written: 0 };

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

interface Reply {
  status: number;
  headers: IncomingMessage['headers'];
  rawHeaders: string[];
  body: Buffer;
}

function call(port: number, method: string, path: string, headers: Record<string, string> = {}, body?: Buffer | string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers, agent: clientAgent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, rawHeaders: res.rawHeaders, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

const bodyJson = (r: Reply): any => JSON.parse(r.body.toString('utf8'));

let dir: string;
let instance: FakeInstance;
let forwarder: ListeningForwarder;
let port: number;
const clientAgent = new Agent({ keepAlive: true });
const key = generateRouteKey();
const oldKey = generateRouteKey();
const instances = new Map<string, { socketPath: string; state: InstanceState }>();
const events: ForwardEvent[] = [];
const token = (instance = 'inst-a', service = 'svc', ttlMs = 60_000, k = key): string =>
  signRouteToken({ instance, service, expiresAt: Date.now() + ttlMs }, k);

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'shoal-fwd-'));
  instance = await startInstance(join(dir, 'app.sock'));
  instances.set('inst-a', { socketPath: instance.socketPath, state: 'ready' });
  instances.set('inst-starting', { socketPath: instance.socketPath, state: 'starting' });
  instances.set('inst-gone-socket', { socketPath: join(dir, 'nothing-here.sock'), state: 'ready' });
  await writeFile(join(dir, 'not-a-socket'), 'x');
  instances.set('inst-refusing', { socketPath: join(dir, 'not-a-socket'), state: 'ready' });
  forwarder = await listenForwarder({
    host: '127.0.0.1',
    port: 0,
    keys: [key, oldKey],
    resolveInstance: (id) => instances.get(id),
    requestTimeoutMs: 300,
    maxBodyBytes: 64 * 1024 * 1024,
    onRequest: (e) => events.push(e),
  });
  port = forwarder.address.port;
});

after(async () => {
  clientAgent.destroy();
  await forwarder.close();
  await new Promise<void>((resolve) => instance.server.close(() => resolve()));
  instance.server.closeAllConnections();
  await rm(dir, { recursive: true, force: true });
});

test('a valid token routes to its instance; path and query are forwarded verbatim under /i', async () => {
  const r = await call(port, 'PUT', '/i/orders/7?x=1&y=%20z', { 'x-shoal-route': token() }, 'hello');
  assert.equal(r.status, 200);
  assert.equal(r.headers['x-shoal-instance'], 'inst-a');
  assert.equal(r.headers['x-shoal-error'], undefined, "an instance's reply is not marked as the host's");
  assert.deepEqual(bodyJson(r), { ok: true, path: '/orders/7?x=1&y=%20z' });
  assert.deepEqual(bodyJson(await call(port, 'GET', '/i', { 'x-shoal-route': token() })).path, '/');
  assert.deepEqual(bodyJson(await call(port, 'GET', '/i?q=1', { 'x-shoal-route': token() })).path, '/?q=1');
  const h = bodyJson(await call(port, 'DELETE', '/i/headers', { 'x-shoal-route': token() }));
  assert.equal(h.method, 'DELETE');
});

test('status and headers propagate; hop-by-hop headers and the route token are stripped', async () => {
  const sent = await call(port, 'POST', '/i/headers', {
    'x-shoal-route': token(),
    connection: 'keep-alive, x-drop-me',
    'x-drop-me': '1',
    'keep-alive': 'timeout=5',
    te: 'trailers',
    'proxy-authorization': 'Basic eA==',
    'x-keep': 'yes',
    'content-type': 'application/json',
  }, '{}');
  const seen: string[] = bodyJson(sent).rawHeaders.filter((_: string, i: number) => i % 2 === 0).map((n: string) => n.toLowerCase());
  assert.ok(seen.includes('x-keep') && seen.includes('content-type') && seen.includes('host'), seen.join());
  for (const gone of ['x-shoal-route', 'x-drop-me', 'keep-alive', 'te', 'proxy-authorization']) assert.ok(!seen.includes(gone), `${gone} reached the instance`);

  const r = await call(port, 'GET', '/i/teapot', { 'x-shoal-route': token() });
  assert.equal(r.status, 418);
  assert.equal(r.body.toString(), 'short and stout');
  assert.equal(r.headers['x-custom'], 'yes');
  assert.equal(r.headers['content-type'], 'text/plain');
  assert.deepEqual(r.headers['set-cookie'], ['a=1', 'b=2']);
  assert.equal(r.headers['x-hop'], undefined);
  assert.equal(r.headers['proxy-thing'], undefined);
  assert.equal(r.headers['x-shoal-instance'], 'inst-a');
});

test('a 50 MB body streams both ways intact', async () => {
  const total = 50 * 1024 * 1024;
  const chunk = randomBytes(256 * 1024);
  const sentHash = createHash('sha256');
  const gotHash = createHash('sha256');
  let got = 0;
  await new Promise<void>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/i/echo', agent: clientAgent, headers: { 'x-shoal-route': token() } }, (res) => {
      assert.equal(res.statusCode, 200);
      res.on('data', (c: Buffer) => {
        got += c.length;
        gotHash.update(c);
      });
      res.on('end', resolve);
      res.on('error', reject);
    });
    req.on('error', reject);
    let sent = 0;
    const pump = (): void => {
      while (sent < total) {
        // Number each chunk so a reordering or a repeat would change the hash.
        chunk.writeUInt32BE(sent / chunk.length, 0);
        sentHash.update(chunk);
        sent += chunk.length;
        if (!req.write(chunk)) {
          req.once('drain', pump);
          return;
        }
      }
      req.end();
    };
    pump();
  });
  assert.equal(got, total);
  assert.equal(gotHash.digest('hex'), sentHash.digest('hex'));
});

test('the forwarder does not buffer: a stalled instance stalls the sender', async () => {
  // The instance reads nothing for a while. If the forwarder buffered bodies, the client
  // could push its whole 50 MB meanwhile; with back-pressure only the socket buffers fill.
  const total = 50 * 1024 * 1024;
  const chunk = Buffer.alloc(256 * 1024, 1);
  let sent = 0;
  const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/i/stall', agent: false, headers: { 'x-shoal-route': token() } });
  const reply = new Promise<Reply>((resolve, reject) => {
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, rawHeaders: res.rawHeaders, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
  });
  let stalledAt = -1;
  const pump = (): void => {
    while (sent < total) {
      sent += chunk.length;
      if (!req.write(chunk)) {
        req.once('drain', pump);
        return;
      }
    }
    req.end();
  };
  pump();
  await waitFor(() => stall.reading !== undefined);
  await new Promise((r) => setTimeout(r, 400));
  stalledAt = sent;
  stall.reading!();
  const r = await reply;
  assert.equal(r.status, 200);
  assert.equal(bodyJson(r).bytes, total);
  assert.ok(stalledAt < 24 * 1024 * 1024, `the client got ${(stalledAt / 1048576).toFixed(1)} MB out while the instance read nothing`);
});

test('the forwarder does not buffer replies: a client that stops reading stalls the instance', async () => {
  const patient = await listenForwarder({ host: '127.0.0.1', port: 0, keys: [key], resolveInstance: (id) => instances.get(id), requestTimeoutMs: 10_000 });
  try {
    let received = 0;
    let res: IncomingMessage | undefined;
    const done = new Promise<void>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: patient.address.port, path: '/i/flood', agent: false, headers: { 'x-shoal-route': token() } }, (r) => {
        res = r;
        r.pause(); // read nothing for now
        r.on('data', (c: Buffer) => (received += c.length));
        r.on('end', resolve);
        r.on('error', reject);
      });
      req.on('error', reject);
      req.end();
    });
    await waitFor(() => res !== undefined && flood.written > 0);
    await new Promise((r) => setTimeout(r, 400));
    const writtenWhileStalled = flood.written;
    res!.resume();
    await done;
    assert.equal(received, 50 * 1024 * 1024);
    assert.ok(writtenWhileStalled < 24 * 1024 * 1024, `the instance got ${(writtenWhileStalled / 1048576).toFixed(1)} MB out while the client read nothing`);
  } finally {
    await patient.close();
  }
});

test('a client that stops reading for longer than the timeout has its reply cut', async () => {
  const outcome = await new Promise<string>((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/i/flood', agent: false, headers: { 'x-shoal-route': token() } }, (r) => {
      r.pause();
      setTimeout(() => {
        r.on('data', () => {});
        r.on('end', () => resolve('complete'));
        r.on('error', () => resolve('cut'));
        r.on('aborted', () => resolve('cut'));
        r.resume();
      }, 800);
    });
    req.on('error', () => resolve('cut'));
    req.end();
  });
  assert.equal(outcome, 'cut');
});

test('a reply sent before the request body was read reaches the client; the next request is fine', async () => {
  const r = await call(port, 'POST', '/i/early', { 'x-shoal-route': token() }, Buffer.alloc(4 * 1024 * 1024));
  assert.equal(r.status, 200);
  assert.equal(r.body.toString(), 'early');
  const next = await call(port, 'POST', '/i/echo', { 'x-shoal-route': token() }, 'after');
  assert.equal(next.body.toString(), 'after');
});

test('an instance cannot set x-shoal-instance itself', async () => {
  const r = await call(port, 'GET', '/i/spoof', { 'x-shoal-route': token() });
  assert.equal(r.headers['x-shoal-instance'], 'inst-a');
  assert.equal(r.rawHeaders.filter((h) => h.toLowerCase() === 'x-shoal-instance').length, 1);
});

test('an instance cannot mark its reply as the host\'s own: its x-shoal-error headers are dropped', async () => {
  for (const path of ['/i/spoof-error', '/i/spoof-error-chunked']) {
    const r = await call(port, 'GET', path, { 'x-shoal-route': token() });
    assert.equal(r.rawHeaders.filter((h) => h.toLowerCase() === 'x-shoal-error').length, 0, path);
    assert.equal(r.headers['x-shoal-instance'], 'inst-a', path);
  }
  const r = await call(port, 'GET', '/i/spoof-error', { 'x-shoal-route': token() });
  assert.equal(r.status, 404, 'the status itself passes through');
  assert.match(bodyJson(r).error.message, /not on this host/);
  const chunked = await call(port, 'GET', '/i/spoof-error-chunked', { 'x-shoal-route': token() });
  assert.equal(chunked.status, 502);
  assert.equal(chunked.headers['x-kept'], 'yes');
  assert.equal(chunked.body.toString(), 'no');
});

test('no token → 401; forged, altered, expired or garbage token → 403', async () => {
  const none = await call(port, 'GET', '/i/x');
  assert.equal(none.status, 401);
  assert.equal(bodyJson(none).error.code, 'unauthorized');
  assert.equal(none.headers['x-shoal-error'], 'token');

  const good = token();
  const [v, , sig] = good.split('.');
  const altered = `${v}.${Buffer.from(JSON.stringify(['inst-b', 'svc', Date.now() + 60_000, []])).toString('base64url')}.${sig}`;
  const cases: Array<[string, RegExp]> = [
    [token('inst-a', 'svc', 60_000, generateRouteKey()), /bad signature/],
    [altered, /bad signature/],
    [token('inst-a', 'svc', -1000), /expired/],
    ['not a token', /malformed/],
  ];
  for (const [t, message] of cases) {
    const r = await call(port, 'GET', '/i/x', { 'x-shoal-route': t });
    assert.equal(r.status, 403);
    assert.equal(r.headers['x-shoal-error'], 'token');
    assert.equal(r.headers['content-type'], 'application/json');
    const body = bodyJson(r);
    assert.equal(body.error.code, 'forbidden');
    assert.match(body.error.message, /^route token /);
    assert.match(body.error.message, message);
  }
});

test('a token scoped to operations: a declared one is forwarded, an undeclared path → 403 operation before the instance sees it', async () => {
  const scoped = signRouteToken({ instance: 'inst-a', service: 'svc', expiresAt: Date.now() + 60_000, operations: ['echo', 'headers'] }, key);
  const seenBefore = instance.seen.length;
  const ok = await call(port, 'POST', '/i/echo', { 'x-shoal-route': scoped, 'content-type': 'application/json' }, '{"a":1}');
  assert.equal(ok.status, 200);
  assert.equal(ok.body.toString(), '{"a":1}');
  for (const path of ['/i/admin', '/i/', '/i', '/i/echoes', '/i/healthz?x=1']) {
    const r = await call(port, 'POST', path, { 'x-shoal-route': scoped, 'content-type': 'application/json' }, '{}');
    assert.equal(r.status, 403, path);
    assert.equal(r.headers['x-shoal-error'], 'operation', path);
    assert.equal(bodyJson(r).error.code, 'forbidden');
    assert.match(bodyJson(r).error.message, /not one of its declared operations/);
  }
  assert.deepEqual(instance.seen.slice(seenBefore), ['/echo']);
});

test('the host keeps no per-route state: a fresh forwarder that only shares the key honours a token and its scope', async () => {
  const scoped = signRouteToken({ instance: 'inst-a', service: 'svc', expiresAt: Date.now() + 60_000, operations: ['headers'] }, key);
  // Nothing is registered with this forwarder: no route table, just the key and instance lookup.
  const fresh = await listenForwarder({ host: '127.0.0.1', port: 0, keys: [key], resolveInstance: (id) => instances.get(id) });
  try {
    assert.equal((await call(fresh.address.port, 'GET', '/i/headers', { 'x-shoal-route': scoped })).status, 200);
    const denied = await call(fresh.address.port, 'GET', '/i/echo', { 'x-shoal-route': scoped });
    assert.equal(denied.status, 403);
    assert.equal(denied.headers['x-shoal-error'], 'operation');
  } finally {
    await fresh.close();
  }
});

test('a cached token still expires on time', async () => {
  const t = token('inst-a', 'svc', 400);
  assert.equal((await call(port, 'GET', '/i/x', { 'x-shoal-route': t })).status, 200);
  await new Promise((r) => setTimeout(r, 450));
  assert.equal((await call(port, 'GET', '/i/x', { 'x-shoal-route': t })).status, 403);
});

test('tokens signed with an older key still pass during rotation', async () => {
  const r = await call(port, 'GET', '/i/x', { 'x-shoal-route': token('inst-a', 'svc', 60_000, oldKey) });
  assert.equal(r.status, 200);
});

test('a valid token for an instance this host does not have → 404; paths outside /i → 404', async () => {
  const r = await call(port, 'GET', '/i/x', { 'x-shoal-route': token('inst-removed', 'payment') });
  assert.equal(r.status, 404);
  assert.equal(bodyJson(r).error.code, 'not-found');
  assert.match(bodyJson(r).error.message, /instance inst-removed \(service payment\) is not on this host/);
  assert.equal(r.headers['x-shoal-error'], 'gone');
  const outside = await call(port, 'GET', '/s/x', { 'x-shoal-route': token() });
  assert.equal(outside.status, 404);
  assert.equal(outside.headers['x-shoal-error'], 'no-route');
});

test('an instance that is not ready → 503 with Retry-After', async () => {
  const r = await call(port, 'GET', '/i/x', { 'x-shoal-route': token('inst-starting') });
  assert.equal(r.status, 503);
  assert.equal(r.headers['retry-after'], '1');
  assert.equal(r.headers['x-shoal-error'], 'not-ready');
  assert.match(bodyJson(r).error.message, /starting/);
});

test('an instance socket that is missing or refuses → 502', async () => {
  for (const id of ['inst-gone-socket', 'inst-refusing']) {
    const r = await call(port, 'POST', '/i/x', { 'x-shoal-route': token(id) }, 'body');
    assert.equal(r.status, 502, id);
    assert.equal(bodyJson(r).error.code, 'unavailable');
    assert.match(bodyJson(r).error.message, /(ENOENT|ECONNREFUSED)/);
    assert.equal(r.headers['x-shoal-error'], 'refused', id);
  }
});

test('an instance that stays silent → 504', async () => {
  const started = Date.now();
  const r = await call(port, 'GET', '/i/slow', { 'x-shoal-route': token() });
  assert.equal(r.status, 504);
  assert.equal(bodyJson(r).error.code, 'timeout');
  assert.equal(r.headers['x-shoal-error'], 'timeout');
  assert.ok(Date.now() - started < 2000);
});

test('a body over the limit → 413, by content-length up front or while streaming', async () => {
  const small = await listenForwarder({ host: '127.0.0.1', port: 0, keys: [key], resolveInstance: (id) => instances.get(id), maxBodyBytes: 1024 });
  try {
    const before = instance.requests;
    const up = await call(small.address.port, 'POST', '/i/hash', { 'x-shoal-route': token() }, Buffer.alloc(2048));
    assert.equal(up.status, 413);
    assert.equal(bodyJson(up).error.code, 'too-large');
    assert.equal(up.headers['x-shoal-error'], 'too-large');
    assert.equal(instance.requests, before, 'refused by content-length before reaching the instance');

    // Chunked: no length declared, so the forwarder counts and stops at the limit.
    const status = await new Promise<number>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: small.address.port, method: 'POST', path: '/i/hash', agent: false, headers: { 'x-shoal-route': token() } }, (res) => {
        res.resume();
        assert.equal(res.headers['x-shoal-error'], 'too-large');
        resolve(res.statusCode!);
      });
      req.on('error', reject);
      req.write(Buffer.alloc(600));
      setTimeout(() => req.end(Buffer.alloc(600)), 50);
    });
    assert.equal(status, 413);
    await waitFor(() => instance.closedEarly.includes('/hash'));

    const fits = await call(small.address.port, 'POST', '/i/hash', { 'x-shoal-route': token() }, Buffer.alloc(1024, 7));
    assert.equal(fits.status, 200);
    assert.equal(bodyJson(fits).bytes, 1024);
  } finally {
    await small.close();
  }
});

test('connections to an instance are kept alive and reused; forget() drops them', async () => {
  const before = instance.connections;
  for (let i = 0; i < 20; i++) assert.equal((await call(port, 'GET', `/i/n${i}`, { 'x-shoal-route': token() })).status, 200);
  const used = instance.connections - before;
  assert.ok(used <= 1, `20 sequential requests used ${used} new connections`);
  forwarder.forget('inst-a');
  assert.equal((await call(port, 'GET', '/i/again', { 'x-shoal-route': token() })).status, 200);
  assert.equal(instance.connections - before, used + 1, 'a forgotten instance gets a fresh connection');
});

test('a client that goes away aborts the request to the instance', async () => {
  const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/i/wait', agent: false, headers: { 'x-shoal-route': token() } });
  req.on('error', () => {});
  req.write('partial');
  await waitFor(() => instance.seen.includes('/wait'));
  req.destroy();
  await waitFor(() => instance.closedEarly.includes('/wait'));
  await waitFor(() => events.some((e) => e.status === 499));
});

test('concurrent requests each get their own reply', async () => {
  const replies = await Promise.all(
    Array.from({ length: 64 }, (_, i) => call(port, 'POST', '/i/echo', { 'x-shoal-route': token(), 'content-type': 'text/plain' }, `message ${i} `.repeat(i * 50 + 1))),
  );
  replies.forEach((r, i) => {
    assert.equal(r.status, 200);
    assert.equal(r.body.toString(), `message ${i} `.repeat(i * 50 + 1));
  });
});

test('onRequest reports instance, service, status and bytes', async () => {
  events.length = 0;
  await call(port, 'POST', '/i/echo', { 'x-shoal-route': token('inst-a', 'payment') }, 'x'.repeat(1000));
  await waitFor(() => events.length > 0);
  const e = events[0]!;
  assert.equal(e.instance, 'inst-a');
  assert.equal(e.service, 'payment');
  assert.equal(e.status, 200);
  assert.equal(e.bytesIn, 1000);
  assert.equal(e.bytesOut, 1000);
  assert.ok(e.durationMs >= 0 && e.durationMs < 5000);
});

async function waitFor(predicate: () => boolean, timeoutMs = 3000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > end) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
