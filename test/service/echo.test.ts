// examples/echo on shoal/service, run from its TypeScript source as a child process:
// every operation behaves as the plain server.mjs does, with the SDK's error shapes.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFile, rm, stat } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startChildService, type ChildService } from '../fixtures/child-service.ts';
import { call, post } from '../fixtures/instance-client.ts';
import { tempDir } from './helpers.ts';

const SERVICE = fileURLToPath(new URL('../../examples/echo/service.ts', import.meta.url));

const start = (dir: string): Promise<ChildService> => startChildService(SERVICE, { socket: join(dir, 'app.sock'), env: { ...process.env, SHOAL_IMPORTS: join(dir, 'imports') } });

describe('examples/echo/service.ts', () => {
  let dir: string;
  let echo: ChildService;
  before(async () => {
    dir = await tempDir();
    echo = await start(dir);
  });
  after(async () => {
    await echo.kill();
    await rm(dir, { recursive: true, force: true });
  });

  test('Echo returns the object; a missing or non-string message is 400 naming /message', async () => {
    const sent = { message: 'héllo, shoal', extra: [1, 2, { a: null }] };
    assert.deepEqual((await post(echo.socket, 'Echo', sent)).json, sent);
    for (const body of [{}, { message: 42 }]) {
      const r = await post(echo.socket, 'Echo', body);
      assert.equal(r.status, 400);
      assert.equal(r.json.error.code, 'invalid');
      assert.equal(r.json.error.field, '/message');
    }
    assert.equal((await post(echo.socket, 'constructor', {})).status, 404);
    assert.equal((await call(echo.socket, 'GET', '/healthz')).status, 200);
  });

  test('Inspect reports what the process sees', async () => {
    const r = await post(echo.socket, 'Inspect', {});
    assert.equal(r.status, 200);
    assert.equal(r.json.pid, echo.child.pid);
    assert.equal(r.json.uid, process.getuid?.());
    assert.ok(r.json.interfaces.includes('lo'));
    assert.ok(r.json.processes >= 2);
    assert.equal((await post(echo.socket, 'Inspect', { unexpected: 1 })).status, 400, 'Inspect takes no fields');
  });

  test('Connect reaches a loopback listener, reports a refused port, checks the port', async () => {
    const listener = createServer((s) => s.destroy());
    listener.listen(0, '127.0.0.1');
    await once(listener, 'listening');
    const { port } = listener.address() as AddressInfo;
    try {
      assert.deepEqual((await post(echo.socket, 'Connect', { host: '127.0.0.1', port })).json, { connected: true });
    } finally {
      listener.close();
      await once(listener, 'close');
    }
    assert.deepEqual((await post(echo.socket, 'Connect', { host: '127.0.0.1', port })).json, { connected: false, error: 'ECONNREFUSED' });
    const bad = await post(echo.socket, 'Connect', { host: '127.0.0.1', port: 70000 });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.field, '/port');
  });

  test('Spawn starts the children and counts them', async () => {
    assert.deepEqual((await post(echo.socket, 'Spawn', { count: 2 })).json, { spawned: 2 });
    assert.equal((await post(echo.socket, 'Spawn', { count: 1001 })).status, 400);
  });

  test('Hog grows the resident memory by about the amount asked', async () => {
    const rss = async () => Number(/VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${echo.child.pid}/status`, 'utf8'))?.[1]) * 1024;
    const start = await rss();
    assert.deepEqual((await post(echo.socket, 'Hog', { mb: 64 })).json, { mb: 64 });
    const deadline = Date.now() + 3000;
    while ((await rss()) - start < 48 * 2 ** 20 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.ok((await rss()) - start >= 48 * 2 ** 20);
    assert.equal((await post(echo.socket, 'Hog', { mb: 0 })).status, 400);
  });

  test('Crash replies, then exits with the code', async () => {
    assert.equal((await post(echo.socket, 'Crash', { code: 256 })).status, 400);
    const r = await post(echo.socket, 'Crash', { code: 7 });
    assert.deepEqual(r.json, {});
    assert.equal((await echo.exited)[0], 7);
  });
});

test('examples/echo/service.ts exits 0 on SIGTERM and removes its socket', async () => {
  const dir = await tempDir();
  try {
    const echo = await start(dir);
    echo.child.kill('SIGTERM');
    assert.deepEqual(await echo.exited, [0, null]);
    await assert.rejects(stat(echo.socket), /ENOENT/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
