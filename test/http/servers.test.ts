// Every server Shoal runs is hardened (issue 9, items 4 and 6): the provider, the store,
// the host's control and data planes, the forwarder alone, and import sockets. Limits are
// lowered through the SHOAL_* variables, read when each server starts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHost } from '../../src/host/index.ts';
import { listenForwarder } from '../../src/host/data-plane/forwarder.ts';
import { openImportSockets } from '../../src/host/data-plane/import-sockets.ts';
import { generateRouteKey } from '../../src/host/data-plane/route-token.ts';
import { startFarm } from '../provider/fixtures/provider.ts';
import { until } from '../fixtures/until.ts';

process.env.SHOAL_IDLE_TIMEOUT_MS = '300';
process.env.SHOAL_MAX_CONNECTIONS_PER_CLIENT = '6';

type Target = { port: number } | { path: string };

function exchange(target: Target, text: string, from = '127.0.0.1'): { socket: Socket; reply: Promise<string> } {
  const socket = 'path' in target ? connect(target.path) : connect({ host: '127.0.0.1', port: target.port, localAddress: from });
  socket.write(text);
  let got = '';
  socket.setEncoding('utf8');
  socket.on('data', (d: string) => (got += d));
  socket.on('error', () => undefined); // a reset after the reply: the reply is what counts
  return { socket, reply: new Promise((resolve) => socket.on('close', () => resolve(got))) };
}

const portOf = (url: string) => Number(new URL(url).port);
const hostOf = (t: Target) => ('path' in t ? 'localhost' : `127.0.0.1:${t.port}`);

async function expectBodyTimeout(target: Target, path: string, headers = '', method = 'POST'): Promise<void> {
  const { reply } = exchange(target, `${method} ${path} HTTP/1.1\r\nhost: ${hostOf(target)}\r\ncontent-type: application/json\r\n${headers}content-length: 100\r\n\r\n{"a":`);
  const text = await reply;
  assert.match(text, /^HTTP\/1\.1 408 /, `${path}: ${text.slice(0, 200)}`);
  assert.match(text, /"code":"timeout"/);
}

async function expectHeadersTimeout(target: Target): Promise<void> {
  const { reply } = exchange(target, `GET / HTTP/1.1\r\nhost: ${hostOf(target)}\r\nx-slow`);
  assert.match(await reply, /^HTTP\/1\.1 408 /);
}

/** Six half-sent requests from 127.0.0.2 fill its share; the seventh gets 503; 127.0.0.1 is still served. */
async function expectPerClientCap(target: { port: number }, t: { after(fn: () => void): void }): Promise<void> {
  const half = `POST /healthz HTTP/1.1\r\nhost: 127.0.0.1:${target.port}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{`;
  const held = Array.from({ length: 6 }, () => exchange(target, `${half}`, '127.0.0.2'));
  t.after(() => held.forEach((h) => h.socket.destroy()));
  await until('the six are accepted', async () => {
    const probe = exchange(target, half, '127.0.0.2');
    const text = await Promise.race([probe.reply, new Promise<string>((r) => setTimeout(() => r(''), 1000))]);
    probe.socket.destroy();
    return text.startsWith('HTTP/1.1 503');
  }, 30_000);
  const res = await fetch(`http://127.0.0.1:${target.port}/healthz`);
  assert.notEqual(res.status, 503);
  await res.body?.cancel();
}

async function expectJsonRequired(url: string, path: string, headers: Record<string, string> = {}): Promise<void> {
  const res = await fetch(`${url}${path}`, { method: 'POST', headers: { ...headers, 'content-type': 'text/plain' }, body: '{}' });
  assert.equal(res.status, 415, path);
  const body = (await res.json()) as { error: { code: string; field: string } };
  assert.deepEqual([body.error.code, body.error.field], ['unsupported', 'content-type']);
}

async function expectHostChecked(url: string): Promise<void> {
  const port = portOf(url);
  const { reply } = exchange({ port }, `GET /healthz HTTP/1.1\r\nhost: rebound.example:${port}\r\nconnection: close\r\n\r\n`);
  const text = await reply;
  assert.match(text, /^HTTP\/1\.1 403 /);
  assert.match(text, /"field":"host"/);
}

test('servers: the provider and its store', async (t) => {
  const farm = await startFarm(t, { hosts: 1 });
  const provider = { port: portOf(farm.provider.url) };
  // With a token: the gate lets these through, so what answers is the hardening.
  const auth = `authorization: Bearer ${farm.token}\r\n`;
  const authHeaders = { authorization: `Bearer ${farm.token}` };
  await expectBodyTimeout(provider, '/s/echo/Echo', auth);
  await expectBodyTimeout(provider, '/api/v1/services', auth);
  await expectHeadersTimeout(provider);
  await expectPerClientCap(provider, t);
  await expectJsonRequired(farm.provider.url, '/s/echo/Echo', authHeaders);
  await expectJsonRequired(farm.provider.url, '/api/v1/services', authHeaders);
  await expectHostChecked(farm.provider.url);
  assert.equal((await farm.call('Echo', { message: 'still fine' })).status, 200);

  const store = { port: portOf(farm.store.url) };
  await expectBodyTimeout(store, '/v2/x/manifests/v1', auth, 'PUT');
  await expectHeadersTimeout(store);
  await expectPerClientCap(store, t);
  await expectJsonRequired(farm.store.url, '/api/v1/gc', authHeaders);
  await expectHostChecked(farm.store.url);
});

test("servers: a host's control and data planes", async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'shoal-edge-host-'));
  const host = await startHost({
    listen: { host: '127.0.0.1', port: 0 },
    token: 'edge-test-token',
    capacity: { memoryMb: 1024, cpuMillis: 2000, instances: 4 },
    driver: 'process',
    dataDir,
  });
  t.after(async () => {
    await host.close();
    await rm(dataDir, { recursive: true, force: true });
  });
  const control = { port: portOf(host.controlUrl) };
  await expectBodyTimeout(control, '/v1/instances', 'authorization: Bearer edge-test-token\r\n');
  await expectHeadersTimeout(control);
  await expectPerClientCap(control, t);
  await expectJsonRequired(host.controlUrl, '/v1/instances');
  await expectHostChecked(host.controlUrl);
  const data = { port: portOf(host.dataUrl) };
  await expectHeadersTimeout(data);
  await expectPerClientCap(data, t);
  await expectHostChecked(host.dataUrl);
});

test('servers: the forwarder alone and import sockets', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-edge-imp-'));
  const forwarder = await listenForwarder({ host: '127.0.0.1', port: 0, keys: [generateRouteKey()], resolveInstance: () => undefined });
  // An upstream that reads the whole body before answering: the import socket relays as it comes.
  const upstream = createServer((req, res) => req.resume().on('end', () => res.end('{}')));
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  const upstreamPort = (upstream.address() as AddressInfo).port;
  const imports = await openImportSockets(join(dir, 'imports'), [{ name: 'alpha', url: `http://127.0.0.1:${upstreamPort}/` }]);
  t.after(async () => {
    upstream.closeAllConnections();
    await new Promise<void>((r) => upstream.close(() => r()));
    await imports.close();
    await forwarder.close();
    await rm(dir, { recursive: true, force: true });
  });
  await expectHeadersTimeout({ port: forwarder.address.port });
  await expectPerClientCap({ port: forwarder.address.port }, t);
  const socket = { path: imports.sockets.alpha! };
  await expectBodyTimeout(socket, '/Op');
  await expectHeadersTimeout(socket);
});
