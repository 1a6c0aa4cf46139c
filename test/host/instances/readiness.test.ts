import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { backoffMs, waitReady } from '../../../src/host/instances/readiness.ts';
import type { InstanceExit } from '../../../src/host/drivers/driver.ts';

const never = new Promise<InstanceExit>(() => {});

async function socketDir(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-ready-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function serve(path: string, status: (n: number) => number): Promise<{ server: Server; hits: string[] }> {
  const hits: string[] = [];
  const server = createServer((req, res) => {
    hits.push(req.url ?? '');
    res.statusCode = status(hits.length);
    res.end();
  });
  return new Promise((resolve) => server.listen(path, () => resolve({ server, hits })));
}

test('waits for the socket to appear and answer 200 on the path', async (t) => {
  const dir = await socketDir(t);
  const sock = join(dir, 'app.sock');
  const waiting = waitReady(sock, '/ready', 5000, never);
  await new Promise((r) => setTimeout(r, 30));
  const { server, hits } = await serve(sock, (n) => (n < 3 ? 503 : 200));
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  await waiting;
  assert.deepEqual(hits, ['/ready', '/ready', '/ready']);
});

test('past the deadline: timeout naming the field and the last answer', async (t) => {
  const dir = await socketDir(t);
  const sock = join(dir, 'app.sock');
  const { server } = await serve(sock, () => 500);
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  // A deadline long enough for several probes to be answered (500) even on a loaded machine.
  await assert.rejects(waitReady(sock, '/healthz', 5000, never), (e: any) => e.code === 'timeout' && e.field === 'readiness.timeoutMs' && /status 500/.test(e.message));
  await assert.rejects(waitReady(join(dir, 'none.sock'), '/healthz', 500, never), (e: any) => e.code === 'timeout' && /not there yet/.test(e.message));
});

test('an exit or a shutdown ends the wait at once', async (t) => {
  const dir = await socketDir(t);
  const sock = join(dir, 'none.sock');
  const exit = Promise.resolve<InstanceExit>({ reason: 'exited', code: 7, signal: undefined, at: 1 });
  await assert.rejects(waitReady(sock, '/healthz', 10_000, exit), (e: any) => e.code === 'unavailable' && /code 7/.test(e.message));
  await assert.rejects(waitReady(sock, '/healthz', 10_000, never, () => true), (e: any) => e.code === 'unavailable' && /shutting down/.test(e.message));
});

test('polls quickly at first, then backs off', () => {
  assert.deepEqual([backoffMs(1, 0), backoffMs(2, 10), backoffMs(5, 500), backoffMs(9, 5000)], [2, 5, 20, 100]);
});
