// connect(): a typed client over HTTP, as farm scripts and tests use against the
// provider's /s/<service>. Here a loopback HTTP server stands in for the provider and
// relays to a serve() instance's socket.
import assert from 'node:assert/strict';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { connect, ServiceError, serve, type RunningService } from '../../src/service/index.ts';
import { Payment } from './fixtures/payment.ts';
import { tempDir } from './helpers.ts';

let dir: string;
let svc: RunningService;
let provider: Server;
let url: string;
const seenHeaders: Array<string | undefined> = [];

before(async () => {
  dir = await tempDir();
  svc = await serve(
    Payment,
    {
      Authorize: async ({ card, amount }) => {
        if (card === '0000') throw new ServiceError('card-declined', 'no', '/card', { status: 402 });
        if (amount === 13) await new Promise((r) => setTimeout(r, 2000));
        return { approved: true, id: `${card}:${amount}` };
      },
      Refund: () => ({ refunded: true }),
    },
    { listen: join(dir, 'app.sock'), logger: false, handleSignals: false },
  );
  provider = createServer((req, res) => {
    seenHeaders.push(req.headers.authorization);
    const m = /^\/s\/payment(\/.*)$/.exec(req.url ?? '');
    if (m === null) {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'not-found', message: 'no such service' } }));
      return;
    }
    const up = request({ socketPath: svc.socketPath, method: req.method, path: m[1], headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => provider.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(provider.address() as AddressInfo).port}/s/payment`;
});
after(async () => {
  provider.closeAllConnections();
  await new Promise((r) => provider.close(r));
  await svc.close();
  await rm(dir, { recursive: true, force: true });
});

test('connect(): typed calls over HTTP, headers sent on every call', async () => {
  const client = connect(Payment, { url: `${url}/`, headers: { authorization: 'Bearer t' } });
  assert.deepEqual(await client.Authorize({ card: '4242', amount: 3 }), { approved: true, id: '4242:3' });
  assert.deepEqual(await client.Refund({ id: 'x' }), { refunded: true });
  assert.deepEqual(seenHeaders.slice(-2), ['Bearer t', 'Bearer t']);
});

test("connect(): the service's errors arrive as ServiceError with its code, field and status", async () => {
  const client = connect(Payment, { url });
  await assert.rejects(client.Authorize({ card: '0000', amount: 1 }), (e: unknown) => {
    assert.ok(e instanceof ServiceError);
    assert.equal(e.code, 'card-declined');
    assert.equal(e.field, '/card');
    assert.equal(e.status, 402);
    return true;
  });
  await assert.rejects(client.Authorize({ card: '1', amount: -1 }), (e: unknown) => e instanceof ServiceError && e.code === 'invalid' && e.status === 400);
  const nowhere = connect(Payment, { url: url.replace('/s/payment', '/s/nothing') });
  await assert.rejects(nowhere.Refund({ id: '' }), (e: unknown) => e instanceof ServiceError && e.code === 'not-found' && e.status === 404);
});

test('connect(): an unreachable URL is unavailable; a signal abandons a call', async () => {
  const closed = createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const port = (closed.address() as AddressInfo).port;
  await new Promise((r) => closed.close(r));
  const client = connect(Payment, { url: `http://127.0.0.1:${port}/s/payment` });
  await assert.rejects(client.Refund({ id: '' }), (e: unknown) => e instanceof ServiceError && e.code === 'unavailable' && e.status === 503);

  const live = connect(Payment, { url });
  const ac = new AbortController();
  const t = performance.now();
  const pending = live.Authorize({ card: '4242', amount: 13 }, { signal: ac.signal });
  setTimeout(() => ac.abort(new Error('given up')), 50);
  await assert.rejects(pending, /given up/);
  assert.ok(performance.now() - t < 1500);
});

test('connect(): refuses a URL that is not http(s)', () => {
  assert.throws(() => connect(Payment, { url: 'ftp://x' }), (e: unknown) => e instanceof ServiceError && e.field === 'url');
  assert.throws(() => connect(Payment, { url: 'nope' }), (e: unknown) => e instanceof ServiceError && e.field === 'url');
});
