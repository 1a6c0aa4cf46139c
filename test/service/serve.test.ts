// serve() over real Unix sockets in a temp dir: the instance contract, typed handlers,
// structured errors, draining, and import clients reaching another serve() instance.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { lstat, mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { defineService, serve, ServiceError, Type, type RunningService } from '../../src/service/index.ts';
import { ShoalError } from '../../src/protocol/errors.ts';
import { createInheritedListener } from '../../src/host/drivers/shared/listener.ts';
import { Payment, Shop } from './fixtures/payment.ts';
import { startChildService, type ChildService } from '../fixtures/child-service.ts';
import { call, post } from '../fixtures/instance-client.ts';
import { tempDir } from './helpers.ts';

const Greeter = defineService({
  name: 'greeter',
  version: '1',
  operations: {
    Greet: {
      input: Type.Object({ name: Type.String({ minLength: 1 }), times: Type.Optional(Type.Integer({ minimum: 1, maximum: 3 })) }),
      output: Type.Object({ greeting: Type.String() }),
    },
    Fail: { input: Type.Object({ how: Type.String() }), output: Type.Object({}) },
    Wait: { input: Type.Object({}), output: Type.Object({ aborted: Type.Boolean() }) },
    Wrong: { input: Type.Object({}), output: Type.Object({ n: Type.Integer() }) },
  },
});

let dir: string;
let svc: RunningService;
let socket: string;
let waitAborted: Promise<unknown> | undefined;
let onWait: ((signal: AbortSignal) => void) | undefined;

before(async () => {
  dir = await tempDir();
  socket = join(dir, 'run', 'app.sock');
  svc = await serve(
    Greeter,
    {
      Greet: ({ name, times }) => ({ greeting: Array.from({ length: times ?? 1 }, () => `hello ${name}`).join(', ') }),
      Fail: ({ how }) => {
        if (how === 'service') throw new ServiceError('card-declined', 'the card was declined', '/card');
        if (how === 'shoal') throw new ShoalError('conflict', 'already done', { field: 'id' });
        if (how === 'async') return Promise.reject(new Error('async boom'));
        if (how === 'status') throw new ServiceError('slow-down', 'too many', undefined, { status: 429 });
        throw new Error('boom');
      },
      Wait: (_input, ctx) =>
        new Promise((resolve) => {
          onWait?.(ctx.signal);
          waitAborted = once(ctx.signal, 'abort');
          ctx.signal.addEventListener('abort', () => resolve({ aborted: true }));
        }),
      Wrong: () => ({ n: 'not a number' }) as unknown as { n: number },
    },
    { listen: socket, importsDir: join(dir, 'imports'), logger: false, handleSignals: false, validateOutput: true },
  );
});
after(async () => {
  await svc.close();
  await rm(dir, { recursive: true, force: true });
});

describe('serve: the instance contract', () => {
  test('listens on the socket with mode 0666 and answers /healthz', async () => {
    const st = await lstat(socket);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o666);
    const r = await call(socket, 'GET', '/healthz');
    assert.equal(r.status, 200);
    assert.equal(r.text, 'ok');
  });

  test('a typed handler answers its operation', async () => {
    const r = await post(socket, 'Greet', { name: 'ada', times: 2 });
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'application/json');
    assert.deepEqual(r.json, { greeting: 'hello ada, hello ada' });
  });

  test('input that does not match the schema is 400 naming the field', async () => {
    const wrongType = await post(socket, 'Greet', { name: 42 });
    assert.equal(wrongType.status, 400);
    assert.equal(wrongType.json.error.code, 'invalid');
    assert.equal(wrongType.json.error.field, '/name');
    assert.match(wrongType.json.error.message, /Greet: input \/name/);

    const missing = await post(socket, 'Greet', {});
    assert.equal(missing.status, 400);
    assert.equal(missing.json.error.field, '/name');

    const range = await post(socket, 'Greet', { name: 'x', times: 9 });
    assert.equal(range.status, 400);
    assert.equal(range.json.error.field, '/times');

    const notJson = await post(socket, 'Greet', '{"name":');
    assert.equal(notJson.status, 400);
    assert.equal(notJson.json.error.code, 'invalid');
    assert.match(notJson.json.error.message, /not JSON/);
  });

  test('an unknown operation is 404 and lists the operations; a GET on an operation is 405', async () => {
    const r = await post(socket, 'Nope', {});
    assert.equal(r.status, 404);
    assert.equal(r.json.error.code, 'not-found');
    assert.match(r.json.error.message, /Greet, Fail, Wait, Wrong/);
    const g = await call(socket, 'GET', '/Greet');
    assert.equal(g.status, 405);
    assert.equal(g.headers.allow, 'POST');
  });

  test('a thrown ServiceError is its code, field and status; the service keeps serving', async () => {
    const r = await post(socket, 'Fail', { how: 'service' });
    assert.equal(r.status, 422);
    assert.deepEqual(r.json, { error: { code: 'card-declined', message: 'the card was declined', field: '/card' } });
    const s = await post(socket, 'Fail', { how: 'status' });
    assert.equal(s.status, 429);
    const c = await post(socket, 'Fail', { how: 'shoal' });
    assert.equal(c.status, 409);
    assert.deepEqual(c.json.error, { code: 'conflict', message: 'already done', field: 'id' });
    assert.equal((await post(socket, 'Greet', { name: 'still here' })).status, 200);
  });

  test('any other throw (sync or async) is 500 internal, and the process keeps serving', async () => {
    for (const how of ['plain', 'async']) {
      const r = await post(socket, 'Fail', { how });
      assert.equal(r.status, 500);
      assert.equal(r.json.error.code, 'internal');
      assert.match(r.json.error.message, /Fail failed: (boom|async boom)/);
    }
    assert.deepEqual((await post(socket, 'Greet', { name: 'after' })).json, { greeting: 'hello after' });
  });

  test('with validateOutput, a reply that breaks the output schema is a 500 naming the field', async () => {
    const r = await post(socket, 'Wrong', {});
    assert.equal(r.status, 500);
    assert.equal(r.json.error.code, 'internal');
    assert.match(r.json.error.message, /output \/n/);
  });

  test('the handler signal aborts when the caller goes away', async () => {
    const started = new Promise<void>((resolve) => (onWait = () => resolve()));
    const { request } = await import('node:http');
    const req = request({ socketPath: socket, method: 'POST', path: '/Wait', agent: false, headers: { 'content-type': 'application/json' } });
    req.on('error', () => {});
    req.end('{}');
    await started;
    req.destroy();
    await waitAborted;
    onWait = undefined;
  });

  test('a body over maxBodyBytes is 413', async () => {
    const small = await serve(Greeter, { Greet: () => ({ greeting: '' }), Fail: () => ({}), Wait: () => ({ aborted: false }), Wrong: () => ({ n: 1 }) }, {
      listen: join(dir, 'small.sock'),
      logger: false,
      handleSignals: false,
      maxBodyBytes: 100,
    });
    try {
      const r = await post(small.socketPath, 'Greet', { name: 'x'.repeat(500) });
      assert.equal(r.status, 413);
      assert.equal(r.json.error.code, 'too-large');
    } finally {
      await small.close();
    }
  });
});

describe('serve: setting up', () => {
  test('a stale socket file is replaced; a regular file in its place is refused', async () => {
    const d = await tempDir();
    try {
      const path = join(d, 'app.sock');
      // Left behind as a crash leaves it: a process listening there is killed with SIGKILL.
      const holder = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
      await once(holder.stdout!, 'data');
      holder.kill('SIGKILL');
      await once(holder, 'exit');
      assert.ok((await lstat(path)).isSocket());
      const second = await serve(Payment, { Authorize: () => ({ approved: true, id: '2' }), Refund: () => ({ refunded: true }) }, { listen: path, logger: false, handleSignals: false });
      assert.deepEqual((await post(path, 'Authorize', { card: '4242', amount: 1 })).json, { approved: true, id: '2' });
      await second.close();
      await assert.rejects(stat(path), /ENOENT/); // close removes its socket

      const plain = join(d, 'plain');
      await writeFile(plain, 'not a socket');
      await assert.rejects(serve(Payment, { Authorize: () => ({ approved: true, id: '' }), Refund: () => ({ refunded: true }) }, { listen: plain, logger: false, handleSignals: false }), /not a socket/);
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });

  test('a missing or extra handler is refused at start (for callers without the compiler)', async () => {
    const d = await tempDir();
    try {
      const handlers = { Authorize: () => ({ approved: true, id: '' }) } as never;
      await assert.rejects(serve(Payment, handlers, { listen: join(d, 'a.sock'), logger: false, handleSignals: false }), /no handler for operation Refund/);
      const extra = { Authorize: () => ({ approved: true, id: '' }), Refund: () => ({ refunded: true }), Steal: () => ({}) } as never;
      await assert.rejects(serve(Payment, extra, { listen: join(d, 'a.sock'), logger: false, handleSignals: false }), /handler Steal is for no operation/);
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });
});

describe('serve: draining', () => {
  test('close() stops accepting, finishes what is in flight, then closes', async () => {
    const d = await tempDir();
    try {
      const path = join(d, 'app.sock');
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      const s = await serve(
        Payment,
        {
          Authorize: async () => {
            await gate;
            return { approved: true, id: 'late' };
          },
          Refund: () => ({ refunded: true }),
        },
        { listen: path, logger: false, handleSignals: false },
      );
      const pending = post(path, 'Authorize', { card: '4242', amount: 5 });
      while (s.inFlight === 0) await new Promise((r) => setTimeout(r, 5));
      const closed = s.close();
      await new Promise((r) => setTimeout(r, 50));
      await assert.rejects(post(path, 'Refund', { id: 'x' }), /ECONNREFUSED|ENOENT/); // no new connections
      release();
      assert.deepEqual((await pending).json, { approved: true, id: 'late' });
      await closed;
      assert.equal(s.inFlight, 0);
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });

  test('past drainTimeoutMs, what is left is aborted and answered 503', async () => {
    const d = await tempDir();
    try {
      const path = join(d, 'app.sock');
      const s = await serve(
        Payment,
        {
          Authorize: (_i, ctx) =>
            new Promise((_resolve, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason))),
          Refund: () => ({ refunded: true }),
        },
        { listen: path, logger: false, handleSignals: false, drainTimeoutMs: 100 },
      );
      const pending = post(path, 'Authorize', { card: '4242', amount: 5 });
      while (s.inFlight === 0) await new Promise((r) => setTimeout(r, 5));
      const t = performance.now();
      await s.close();
      assert.ok(performance.now() - t < 2000);
      const r = await pending;
      assert.equal(r.status, 503);
      assert.equal(r.json.error.code, 'unavailable');
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });

  test('SIGTERM: a child process finishes its in-flight message, refuses new ones, exits 0', async () => {
    const d = await tempDir();
    const path = join(d, 'app.sock');
    const slowService = fileURLToPath(new URL('./fixtures/slow-service.ts', import.meta.url));
    let fixture: ChildService | undefined;
    try {
      fixture = await startChildService(slowService, { socket: path, env: { ...process.env, SHOAL_IMPORTS: join(d, 'imports') } });
      const { child, exited } = fixture;
      const slow = post(path, 'Sleep', { ms: 600 });
      await new Promise((r) => setTimeout(r, 150));
      child.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 100));
      await assert.rejects(post(path, 'Sleep', { ms: 0 }), /ECONNREFUSED|ENOENT/);
      const r = await slow;
      assert.equal(r.status, 200);
      assert.deepEqual(r.json, { slept: 600 });
      const [code, signal] = await exited;
      assert.equal(signal, null);
      assert.equal(code, 0);
      await assert.rejects(stat(path), /ENOENT/);
      const lines = fixture.stdout().trim().split('\n').map((l) => JSON.parse(l) as { msg: string });
      assert.deepEqual(
        lines.map((l) => l.msg.split(':')[0]),
        ['listening on ' + path, 'SIGTERM', 'draining', 'stopped'].map((m) => m.split(':')[0]),
      );
    } finally {
      await fixture?.kill();
      await rm(d, { recursive: true, force: true });
    }
  });
});

describe('serve: imports', () => {
  test('ctx.imports.<name>.<Op> reaches another instance over <importsDir>/<name>.sock; peer errors keep their code', async () => {
    const d = await tempDir();
    const importsDir = join(d, 'imports');
    const seen: unknown[] = [];
    const payment = await serve(
      Payment,
      {
        Authorize: ({ card, amount }) => {
          seen.push({ card, amount });
          if (card === '0000') throw new ServiceError('card-declined', 'declined by the bank', '/card', { status: 402 });
          return { approved: true, id: `p-${amount}` };
        },
        Refund: () => ({ refunded: true }),
      },
      { listen: join(importsDir, 'payment.sock'), logger: false, handleSignals: false },
    );
    const shop = await serve(
      Shop,
      {
        Buy: async (order, ctx) => {
          try {
            const p = await ctx.imports.payment.Authorize({ card: order.card, amount: order.amount * order.quantity });
            return { status: 'paid', payment: p.id };
          } catch (e) {
            if (e instanceof ServiceError && e.code === 'card-declined') return { status: 'declined', payment: e.message };
            throw e;
          }
        },
      },
      { listen: join(d, 'app.sock'), importsDir, logger: false, handleSignals: false },
    );
    try {
      const ok = await post(shop.socketPath, 'Buy', { item: 'tea', quantity: 3, card: '4242', amount: 2 });
      assert.equal(ok.status, 200);
      assert.deepEqual(ok.json, { status: 'paid', payment: 'p-6' });
      const declined = await post(shop.socketPath, 'Buy', { item: 'tea', quantity: 1, card: '0000', amount: 2 });
      assert.deepEqual(declined.json, { status: 'declined', payment: 'declined by the bank' });
      // Keep-alive: many calls over the pooled connections.
      const many = await Promise.all(Array.from({ length: 50 }, (_, i) => post(shop.socketPath, 'Buy', { item: 'x', quantity: 1, card: '4242', amount: i })));
      assert.ok(many.every((r, i) => r.status === 200 && r.json.payment === `p-${i}`));
      assert.equal(seen.length, 52);

      // The peer rejects the input (card too short): its 400 comes back as the peer's error.
      const bad = await post(shop.socketPath, 'Buy', { item: 'x', quantity: 1, card: '12', amount: 1 });
      assert.equal(bad.status, 400);
      assert.equal(bad.json.error.code, 'invalid');
      assert.equal(bad.json.error.field, '/card');
    } finally {
      await shop.close();
      await payment.close();
    }
    // With nothing bound at the socket, the call fails as unavailable (503), not a crash.
    const lonely = await serve(Shop, { Buy: async (o, ctx) => ({ status: 'paid', payment: (await ctx.imports.payment.Authorize({ card: o.card, amount: 1 })).id }) }, {
      listen: join(d, 'lonely.sock'),
      importsDir,
      logger: false,
      handleSignals: false,
    });
    try {
      const r = await post(lonely.socketPath, 'Buy', { item: 'x', quantity: 1, card: '4242', amount: 1 });
      assert.equal(r.status, 503);
      assert.equal(r.json.error.code, 'unavailable');
      assert.match(r.json.error.message, /import payment \(payment\): Authorize: cannot reach it: ENOENT/);
    } finally {
      await lonely.close();
      await rm(d, { recursive: true, force: true });
    }
  });
});

describe('serve() on an inherited listener (socket activation)', () => {
  test('answers on the socket the host made and passed as fd 3, never binds $SHOAL_LISTEN, leaves the host path alone', async () => {
    const d = await tempDir();
    const hostDir = join(d, 'host');
    await mkdir(hostDir, { mode: 0o755 });
    const listener = await createInheritedListener(join(hostDir, 'app.sock'));
    const elsewhere = join(d, 'elsewhere.sock');
    const slowService = fileURLToPath(new URL('./fixtures/slow-service.ts', import.meta.url));
    const child = spawn(process.execPath, [slowService], {
      env: { ...process.env, LISTEN_FDS: '1', SHOAL_LISTEN: elsewhere, SHOAL_IMPORTS: join(d, 'imports') },
      stdio: ['ignore', 'pipe', 'inherit', listener.fd],
    });
    const exited = once(child, 'exit');
    try {
      await once(child, 'spawn');
      await listener.release();
      let out = '';
      child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
      for (let i = 0; i < 200 && !out.includes('listening'); i++) await new Promise((r) => setTimeout(r, 25));
      assert.match(out, /listening on fd:3/);
      const r = await post(listener.path, 'Sleep', { ms: 0 });
      assert.deepEqual(r.json, { slept: 0 });
      await assert.rejects(lstat(elsewhere), 'SHOAL_LISTEN is not bound when a listener is inherited');
      child.kill('SIGTERM');
      assert.deepEqual(await exited, [0, null]);
      // The socket file is the host's: the service does not remove it on its way out.
      assert.ok((await lstat(listener.path)).isSocket());
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      await rm(d, { recursive: true, force: true });
    }
  });
});
