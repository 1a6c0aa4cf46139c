// The echo example run as a plain child process, spoken to over its Unix socket.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startChildService, type ChildService } from '../fixtures/child-service.ts';
import { call, post } from '../fixtures/instance-client.ts';

const SERVER = fileURLToPath(new URL('../../examples/echo/rootfs/app/server.mjs', import.meta.url));

const start = (dir: string, name = 'app.sock'): Promise<ChildService> => startChildService(SERVER, { socket: join(dir, name) });

describe('examples/echo server', () => {
  let dir: string;
  let echo: ChildService;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-echo-'));
    // A stale file where the socket goes must not stop the server from listening.
    await writeFile(join(dir, 'app.sock'), 'stale');
    echo = await start(dir);
  });

  after(async () => {
    await echo.kill();
    await rm(dir, { recursive: true, force: true });
  });

  it('listens on $SHOAL_LISTEN, a socket anyone may connect to, and answers /healthz', async () => {
    const st = await stat(echo.socket);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o666);
    const res = await call(echo.socket, 'GET', '/healthz');
    assert.equal(res.status, 200);
    assert.equal(res.text, 'ok');
  });

  it('Echo returns the same object as JSON', async () => {
    const sent = { message: 'héllo, shoal', extra: [1, 2, { a: null }] };
    const res = await post(echo.socket, 'Echo', sent);
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-type'], 'application/json');
    assert.deepEqual(res.json, sent);
  });

  it('Echo without a string message is 400 naming message', async () => {
    for (const body of [{}, { message: 42 }, ['message'], 'message']) {
      // Stringified here: the helper would send a bare string as it is, not as JSON.
      const res = await post(echo.socket, 'Echo', JSON.stringify(body));
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(res.headers['content-type'], 'application/json');
      const err = (res.json as { error: { code: string; message: string; field?: string } }).error;
      assert.equal(err.code, 'invalid');
      assert.equal(err.field, 'message');
      assert.match(err.message, /message/);
    }
    const res = await call(echo.socket, 'POST', '/Echo', '{not json');
    assert.equal(res.status, 400);
  });

  it('an unknown operation is a 404 JSON error', async () => {
    const res = await post(echo.socket, 'NoSuchThing', {});
    assert.equal(res.status, 404);
    assert.equal(res.headers['content-type'], 'application/json');
    assert.equal((res.json as { error: { code: string } }).error.code, 'not-found');
    assert.equal((await call(echo.socket, 'GET', '/Echo')).status, 404);
    // Names inherited from Object.prototype are not operations.
    assert.equal((await post(echo.socket, 'constructor', {})).status, 404);
  });

  it('Inspect reports what the instance sees, with the right types', async () => {
    const res = await post(echo.socket, 'Inspect', {});
    assert.equal(res.status, 200);
    const v = res.json as { pid: unknown; hostname: unknown; uid: unknown; interfaces: unknown; processes: unknown };
    assert.equal(v.pid, echo.child.pid);
    assert.equal(typeof v.hostname, 'string');
    assert.equal(v.uid, process.getuid?.());
    assert.ok(Array.isArray(v.interfaces) && v.interfaces.every((i) => typeof i === 'string'));
    assert.ok((v.interfaces as string[]).includes('lo'), 'loopback is visible');
    assert.equal(typeof v.processes, 'number');
    assert.ok((v.processes as number) >= 2, 'sees at least itself and this test');
  });

  it('Connect reaches a loopback listener and reports a refused port', async () => {
    const listener = createServer((s) => s.destroy());
    listener.listen(0, '127.0.0.1');
    await once(listener, 'listening');
    const { port } = listener.address() as AddressInfo;
    try {
      const yes = await post(echo.socket, 'Connect', { host: '127.0.0.1', port });
      assert.deepEqual(yes.json, { connected: true });
    } finally {
      listener.close();
      await once(listener, 'close');
    }
    const no = await post(echo.socket, 'Connect', { host: '127.0.0.1', port });
    assert.equal((no.json as { connected: boolean }).connected, false);
    assert.equal((no.json as { error: string }).error, 'ECONNREFUSED');
    const bad = await post(echo.socket, 'Connect', { host: '127.0.0.1', port: 'eighty' });
    assert.equal(bad.status, 400);
    assert.equal((bad.json as { error: { field: string } }).error.field, 'port');
  });

  it('Spawn starts the requested children and reports how many ran', async () => {
    const res = await post(echo.socket, 'Spawn', { count: 2 });
    assert.equal(res.status, 200);
    assert.deepEqual(res.json, { spawned: 2 });
  });

  it('Hog grows the resident memory by about the amount asked', async () => {
    const rss = async (): Promise<number> => {
      const status = await readFile(`/proc/${echo.child.pid}/status`, 'utf8');
      return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]) * 1024;
    };
    const before = await rss();
    const res = await post(echo.socket, 'Hog', { mb: 64 });
    assert.deepEqual(res.json, { mb: 64 });
    const deadline = Date.now() + 3000;
    while ((await rss()) - before < 48 * 2 ** 20 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.ok((await rss()) - before >= 48 * 2 ** 20, 'RSS grew by at least 48 MiB');
  });

  it('Crash replies, then exits with the given code', async () => {
    const res = await post(echo.socket, 'Crash', { code: 7 });
    assert.equal(res.status, 200);
    assert.deepEqual(res.json, {});
    const [code] = await echo.exited;
    assert.equal(code, 7);
  });
});

describe('examples/echo shutdown', () => {
  it('exits 0 on SIGTERM and removes its socket', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'shoal-echo-'));
    try {
      const echo = await start(dir, 'term.sock');
      echo.child.kill('SIGTERM');
      const [code] = await echo.exited;
      assert.equal(code, 0);
      await assert.rejects(stat(echo.socket));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
