// The shared server hardening on a plain node server, with short limits: stalled bodies and
// headers get 408, one client's half-sent requests do not keep others out, browsers'
// bodies and rebound Host names are refused, and CORS is off unless configured.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { until } from '../fixtures/until.ts';
import { clientKey, hardenServer, hardeningLimits, type HardeningOptions } from '../../src/http/index.ts';

async function start(
  t: { after(fn: () => Promise<void>): void },
  options: HardeningOptions,
  handler: (req: IncomingMessage, res: ServerResponse) => void = (req, res) => {
    req.resume();
    req.on('end', () => res.end('{"ok":true}'));
  },
): Promise<{ server: Server; port: number }> {
  const server = hardenServer(createServer({ keepAliveTimeout: 30_000 }, handler), options);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });
  return { server, port: (server.address() as AddressInfo).port };
}

/** Writes `text` on a fresh connection (from `from`) and collects what comes back until the server closes it. */
function rawExchange(port: number, text: string, from = '127.0.0.1'): { socket: Socket; reply: Promise<string> } {
  const socket = connect({ host: '127.0.0.1', port, localAddress: from });
  socket.write(text);
  let got = '';
  socket.setEncoding('utf8');
  socket.on('data', (d: string) => (got += d));
  const reply = new Promise<string>((resolve) => {
    socket.on('close', () => resolve(got));
    socket.on('error', () => undefined); // a reset after the reply: the reply is what counts
  });
  return { socket, reply };
}

function get(port: number, path = '/', headers: Record<string, string> = {}, method = 'GET', body?: string, from = '127.0.0.1') {
  return new Promise<{ status: number; headers: IncomingMessage['headers']; body: string }>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, headers, localAddress: from, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('harden: a body that stops arriving gets 408 with a JSON body, then the connection closes', async (t) => {
  const { port } = await start(t, { idleTimeoutMs: 300 });
  const { reply } = rawExchange(port, `POST /x HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"a":`);
  const text = await reply;
  assert.match(text, /^HTTP\/1\.1 408 /);
  const body = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4));
  assert.equal(body.error.code, 'timeout');
  assert.equal(body.error.field, 'body');
  assert.match(body.error.message, /stopped arriving/);
});

test('harden: headers that stop arriving get 408', async (t) => {
  const { port } = await start(t, { idleTimeoutMs: 300, headersTimeoutMs: 60_000 });
  const { reply } = rawExchange(port, `GET / HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\nx-slow: `);
  assert.match(await reply, /^HTTP\/1\.1 408 /);
});

test('harden: a reply being prepared is not cut by the idle timeout', async (t) => {
  const { port } = await start(t, { idleTimeoutMs: 200 }, (req, res) => {
    req.resume();
    req.on('end', () => setTimeout(() => res.end('late'), 600));
  });
  const r = await get(port, '/', { host: `127.0.0.1:${port}` });
  assert.equal(r.status, 200);
  assert.equal(r.body, 'late');
});

test('harden: one client over its connection cap gets 503; other clients are still served', async (t) => {
  const { port } = await start(t, { idleTimeoutMs: 60_000, maxConnectionsPerClient: 3 });
  const half = `POST /x HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{`;
  const held = [1, 2, 3].map(() => rawExchange(port, half, '127.0.0.2'));
  await new Promise((r) => setTimeout(r, 100)); // let the server accept the three
  const over = rawExchange(port, half, '127.0.0.2');
  const text = await over.reply;
  assert.match(text, /^HTTP\/1\.1 503 /);
  assert.match(text, /too many connections from this client \(limit 3\)/);
  const other = await get(port, '/', { host: `127.0.0.1:${port}` });
  assert.equal(other.status, 200);
  // Once the held ones go, the client is served again.
  for (const h of held) h.socket.destroy();
  await Promise.all(held.map((h) => h.reply));
  // The server sees the closes a moment after the client makes them.
  await until('the client is served again', async () => (await get(port, '/', { host: `127.0.0.1:${port}` }, 'GET', undefined, '127.0.0.2')).status === 200);
});

test('harden: 300 half-sent requests from one client leave every other client served', async (t) => {
  const { port } = await start(t, { idleTimeoutMs: 60_000, maxConnectionsPerClient: 50 });
  const half = `POST /x HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{`;
  const attack = Array.from({ length: 300 }, () => rawExchange(port, half, '127.0.0.3'));
  t.after(() => attack.forEach((a) => a.socket.destroy()));
  const replies = await Promise.all(Array.from({ length: 40 }, (_, i) => get(port, '/', { host: `127.0.0.1:${port}` }, 'POST', '{}', `127.0.0.${10 + (i % 4)}`)));
  assert.deepEqual(new Set(replies.map((r) => r.status)), new Set([200]));
  // The excess was turned away, not queued: at least 250 got their 503 and were closed.
  const refused = (await Promise.all(attack.map((a) => Promise.race([a.reply, new Promise<string>((r) => setTimeout(() => r(''), 2000))])))).filter((s) =>
    s.startsWith('HTTP/1.1 503'),
  );
  assert.ok(refused.length >= 250, `${refused.length} refused`);
});

test('harden: bodies on JSON paths need content-type application/json (415 names the header)', async (t) => {
  const { port } = await start(t, { jsonBodies: ['/s/', '/api/'] });
  const host = { host: `127.0.0.1:${port}` };
  const plain = await get(port, '/s/echo/Echo', { ...host, 'content-type': 'text/plain' }, 'POST', '{"message":"hi"}');
  assert.equal(plain.status, 415);
  const e = JSON.parse(plain.body).error;
  assert.equal(e.code, 'unsupported');
  assert.equal(e.field, 'content-type');
  assert.match(e.message, /content-type: application\/json/);
  assert.equal((await get(port, '/api/v1/services', host, 'POST', '{}')).status, 415, 'no content type at all');
  assert.equal((await get(port, '/s/echo/Echo', { ...host, 'content-type': 'application/json; charset=utf-8' }, 'POST', '{}')).status, 200);
  assert.equal((await get(port, '/s/echo/Echo', host, 'POST')).status, 200, 'no body, no content type needed');
  assert.equal((await get(port, '/v2/x/blobs/uploads/', { ...host, 'content-type': 'application/octet-stream' }, 'POST', 'bytes')).status, 200, 'other paths keep their types');
});

test('harden: a loopback listener answers only to its own Host (DNS rebinding)', async (t) => {
  const { port } = await start(t, {});
  for (const ok of [`127.0.0.1:${port}`, `localhost:${port}`, `LOCALHOST:${port}`]) assert.equal((await get(port, '/', { host: ok })).status, 200, ok);
  for (const bad of [`evil.example:${port}`, `127.0.0.1:${port + 1}`, 'localhost', `127.0.0.1.evil.example:${port}`]) {
    const r = await get(port, '/', { host: bad });
    assert.equal(r.status, 403, bad);
    const e = JSON.parse(r.body).error;
    assert.equal(e.field, 'host');
    assert.match(e.message, /DNS rebinding/);
  }
});

test('harden: extra Host names can be allowed', async (t) => {
  const { port } = await start(t, { allowedHosts: ['shoal.test'] });
  assert.equal((await get(port, '/', { host: `shoal.test:${port}` })).status, 200);
});

test('harden: no CORS headers unless the origin is configured', async (t) => {
  const { port } = await start(t, {});
  const host = { host: `127.0.0.1:${port}` };
  const r = await get(port, '/', { ...host, origin: 'https://evil.example' });
  assert.equal(r.headers['access-control-allow-origin'], undefined);
  const pre = await get(port, '/s/echo/Echo', { ...host, origin: 'https://evil.example', 'access-control-request-method': 'POST' }, 'OPTIONS');
  assert.equal(pre.headers['access-control-allow-origin'], undefined);

  const configured = await start(t, { corsOrigins: ['https://console.example'] });
  const chost = { host: `127.0.0.1:${configured.port}` };
  const ok = await get(configured.port, '/s/echo/Echo', { ...chost, origin: 'https://console.example', 'access-control-request-method': 'POST' }, 'OPTIONS');
  assert.equal(ok.status, 204);
  assert.equal(ok.headers['access-control-allow-origin'], 'https://console.example');
  const other = await get(configured.port, '/', { ...chost, origin: 'https://evil.example' });
  assert.equal(other.headers['access-control-allow-origin'], undefined);
});

test('harden: limits come from SHOAL_* variables, then options, then defaults', () => {
  assert.deepEqual(hardeningLimits({}, {}), { headersTimeoutMs: 10_000, requestTimeoutMs: 300_000, idleTimeoutMs: 30_000, maxConnectionsPerClient: 512 });
  const env = { SHOAL_IDLE_TIMEOUT_MS: '5000', SHOAL_MAX_CONNECTIONS_PER_CLIENT: '64', SHOAL_HEADERS_TIMEOUT_MS: 'soon' };
  assert.deepEqual(hardeningLimits({ requestTimeoutMs: 0 }, env), { headersTimeoutMs: 10_000, requestTimeoutMs: 0, idleTimeoutMs: 5000, maxConnectionsPerClient: 64 });
  assert.equal(hardeningLimits({ idleTimeoutMs: 1 }, env).idleTimeoutMs, 5000, 'the operator overrides a server');
  assert.equal(hardeningLimits({ idleTimeoutMs: 1 }, {}).idleTimeoutMs, 1);
});

test('harden: clients are keyed by IPv4 address, IPv6 /64, or one key for Unix sockets', () => {
  const key = (remoteAddress: string | undefined) => clientKey({ remoteAddress } as Socket);
  assert.equal(key('127.0.0.2'), '127.0.0.2');
  assert.equal(key('::ffff:10.0.0.1'), '10.0.0.1');
  assert.equal(key('2001:db8:1:2:aaaa::1'), key('2001:db8:1:2::ffff'));
  assert.notEqual(key('2001:db8:1:2::1'), key('2001:db8:1:3::1'));
  assert.equal(key(undefined), 'local');
});
