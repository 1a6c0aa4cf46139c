import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listenForwarder, type ListeningForwarder } from '../../../src/host/data-plane/forwarder.ts';
import { openImportSockets, type ImportSockets } from '../../../src/host/data-plane/import-sockets.ts';
import { generateRouteKey, signRouteToken } from '../../../src/host/data-plane/route-token.ts';
import { ShoalError } from '../../../src/protocol/errors.ts';

interface Seen {
  url: string;
  method: string;
  headers: IncomingMessage['headers'];
}

// An HTTP server that answers with what it saw, plus `name` so a test knows who answered.
async function startRecorder(name: string, listenOn: string | number): Promise<{ server: Server; seen: Seen[]; port: number }> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    const hash = createHash('sha256');
    let bytes = 0;
    req.on('data', (c: Buffer) => {
      bytes += c.length;
      hash.update(c);
    });
    req.on('end', () => {
      seen.push({ url: req.url!, method: req.method!, headers: req.headers });
      const body = JSON.stringify({ name, url: req.url, headers: req.headers, bytes, sha256: hash.digest('hex') });
      res.writeHead(201, { 'content-type': 'application/json', 'x-answered-by': name });
      res.end(body);
    });
  });
  await new Promise<void>((resolve) => (typeof listenOn === 'string' ? server.listen(listenOn, resolve) : server.listen(listenOn, '127.0.0.1', resolve)));
  const port = typeof listenOn === 'string' ? 0 : (server.address() as AddressInfo).port;
  return { server, seen, port };
}

function viaSocket(socketPath: string, method: string, path: string, headers: Record<string, string> = {}, body?: Buffer | string): Promise<{ status: number; headers: IncomingMessage['headers']; body: any }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, method, path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode!, headers: res.headers, body: text.startsWith('{') ? JSON.parse(text) : text });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

let dir: string;
let upA: Awaited<ReturnType<typeof startRecorder>>;
let upB: Awaited<ReturnType<typeof startRecorder>>;
let instance: Awaited<ReturnType<typeof startRecorder>>;
let forwarder: ListeningForwarder;
let imports: ImportSockets;
const key = generateRouteKey();
const instanceToken = signRouteToken({ instance: 'pay-1', service: 'payment', expiresAt: Date.now() + 600_000 }, key);

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'shoal-imp-'));
  upA = await startRecorder('A', 0);
  upB = await startRecorder('B', 0);
  instance = await startRecorder('payment-instance', join(dir, 'pay.sock'));
  forwarder = await listenForwarder({
    host: '127.0.0.1',
    port: 0,
    keys: [key],
    resolveInstance: (id) => (id === 'pay-1' ? { socketPath: join(dir, 'pay.sock'), state: 'ready' } : undefined),
  });
  imports = await openImportSockets(join(dir, 'imports'), [
    { name: 'alpha', url: `http://127.0.0.1:${upA.port}/s/alpha/`, token: 'token-for-alpha', headers: { 'x-tenant': 't1' } },
    { name: 'beta', url: `http://127.0.0.1:${upB.port}`, token: 'token-for-beta' },
    { name: 'payment', url: `http://127.0.0.1:${forwarder.address.port}/i/`, token: instanceToken },
    { name: 'nowhere', url: 'http://127.0.0.1:9/' },
  ]);
});

after(async () => {
  await imports.close();
  await forwarder.close();
  for (const s of [upA.server, upB.server, instance.server]) {
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
  await rm(dir, { recursive: true, force: true });
});

test('each import socket is <dir>/<name>.sock, mode 0666', async () => {
  assert.deepEqual(Object.keys(imports.sockets).sort(), ['alpha', 'beta', 'nowhere', 'payment']);
  for (const [name, path] of Object.entries(imports.sockets)) {
    assert.equal(path, join(dir, 'imports', `${name}.sock`));
    const s = await stat(path);
    assert.ok(s.isSocket());
    assert.equal(s.mode & 0o777, 0o666);
  }
});

test('a request reaches its binding with the token and headers added, under the bound path', async () => {
  const r = await viaSocket(imports.sockets.alpha!, 'POST', '/charge?amount=5', { 'content-type': 'application/json', 'x-app': '1' }, '{"x":1}');
  assert.equal(r.status, 201);
  assert.equal(r.headers['x-answered-by'], 'A');
  assert.equal(r.body.url, '/s/alpha/charge?amount=5');
  assert.equal(r.body.headers['x-shoal-route'], 'token-for-alpha');
  assert.equal(r.body.headers['x-tenant'], 't1');
  assert.equal(r.body.headers['x-app'], '1');
  assert.equal(r.body.headers.host, `127.0.0.1:${upA.port}`);
  assert.equal(r.body.bytes, 7);

  const b = await viaSocket(imports.sockets.beta!, 'GET', '/');
  assert.equal(b.body.name, 'B');
  assert.equal(b.body.url, '/');
  assert.equal(b.body.headers['x-shoal-route'], 'token-for-beta');
  assert.equal(b.body.headers['x-tenant'], undefined, 'one binding’s headers do not leak into another');
});

test('the instance cannot choose its own token, host or bound headers', async () => {
  const r = await viaSocket(imports.sockets.alpha!, 'GET', '/x', { 'x-shoal-route': 'stolen', host: 'evil.example', 'x-tenant': 't2' });
  assert.equal(r.body.headers['x-shoal-route'], 'token-for-alpha');
  assert.equal(r.body.headers.host, `127.0.0.1:${upA.port}`);
  assert.equal(r.body.headers['x-tenant'], 't1');
});

test('paths that could leave the bound path are refused', async () => {
  const before = upA.seen.length;
  for (const path of ['/../beta/x', '/a/../../x', '/%2e%2e/x', '/..%2Fx', '/a/./b', '/..\\x', 'http://127.0.0.1/x', '*']) {
    const r = await viaSocket(imports.sockets.alpha!, 'GET', path);
    assert.equal(r.status, 400, path);
    assert.equal(r.body.error.code, 'invalid');
  }
  assert.equal(upA.seen.length, before, 'nothing reached the upstream');
});

test('through a host forwarder to an instance, streaming a large body', async () => {
  const body = randomBytes(8 * 1024 * 1024);
  const r = await viaSocket(imports.sockets.payment!, 'PUT', '/orders/9', { 'content-type': 'application/octet-stream' }, body);
  assert.equal(r.status, 201);
  assert.equal(r.headers['x-shoal-instance'], 'pay-1');
  assert.equal(r.body.name, 'payment-instance');
  assert.equal(r.body.url, '/orders/9');
  assert.equal(r.body.bytes, body.length);
  assert.equal(r.body.sha256, createHash('sha256').update(body).digest('hex'));
  assert.equal(r.body.headers['x-shoal-route'], undefined, 'the forwarder strips the token');
});

test('an unreachable binding → 502 JSON', async () => {
  const r = await viaSocket(imports.sockets.nowhere!, 'GET', '/x');
  assert.equal(r.status, 502);
  assert.equal(r.body.error.code, 'unavailable');
  assert.match(r.body.error.message, /import nowhere/);
});

test('connections to a binding are kept alive', async () => {
  const conns: number[] = [];
  upB.server.on('connection', () => conns.push(1));
  for (let i = 0; i < 10; i++) await viaSocket(imports.sockets.beta!, 'GET', `/n${i}`);
  assert.ok(conns.length <= 1, `10 requests opened ${conns.length} connections`);
});

test('bad bindings are refused clearly and leave nothing behind', async () => {
  const d = join(dir, 'bad');
  const refuse = async (bindings: Parameters<typeof openImportSockets>[1], dirPath: string, pattern: RegExp): Promise<void> => {
    await assert.rejects(openImportSockets(dirPath, bindings), (e: unknown) => e instanceof ShoalError && pattern.test(e.message) && e.field !== undefined);
  };
  for (const name of ['', '1abc', 'a/b', '../x', 'a.b', 'a b', 'x'.repeat(65), 'é']) {
    await refuse([{ name, url: 'http://127.0.0.1:1/' }], d, /import name/);
  }
  await refuse([{ name: 'a', url: 'not a url' }], d, /not a URL/);
  await refuse([{ name: 'a', url: 'ftp://x/' }], d, /not supported/);
  await refuse([{ name: 'a', url: 'http://x/?q=1' }], d, /query/);
  await refuse([{ name: 'a', url: 'http://x/', headers: { 'bad name': 'v' } }], d, /header/);
  await refuse([{ name: 'a', url: 'http://x/' }, { name: 'a', url: 'http://y/' }], d, /bound twice/);
  await refuse([{ name: 'abc', url: 'http://x/' }], join(dir, 'd'.repeat(120)), /under 108 bytes/);
  // A later binding failing closes the ones already opened.
  const d3 = join(dir, 'bad3');
  await openImportSockets(d3, []).then((s) => s.close());
  await writeFile(join(d3, 'second.sock'), 'not a socket');
  await refuse([{ name: 'first', url: 'http://x/' }, { name: 'second', url: 'http://x/' }], d3, /is not a socket/);
  await assert.rejects(stat(join(d3, 'first.sock')), { code: 'ENOENT' });
});

test('close removes the sockets; uid/gid are applied', async () => {
  const d = join(dir, 'own');
  const s = await openImportSockets(d, [{ name: 'x', url: 'http://127.0.0.1:1/' }], process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {});
  const st = await stat(s.sockets.x!);
  if (process.getuid?.() === 0) assert.equal(st.uid, 65534);
  await s.close();
  await assert.rejects(stat(join(d, 'x.sock')), { code: 'ENOENT' });
});
