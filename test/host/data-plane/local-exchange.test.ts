// The forwarder's in-process entry (a provider beside its host, src/http/local-link.ts):
// the same checks as over HTTP — token present, genuine, unexpired, scoped to the declared
// operations; the instance here and ready — and the same marked replies, with an
// instance's own x-shoal-error and x-shoal-instance headers dropped.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createForwarder, type InstanceState } from '../../../src/host/data-plane/forwarder.ts';
import { generateRouteKey, signRouteToken } from '../../../src/host/data-plane/route-token.ts';
import { startDataServer } from '../../../src/host/data-server.ts';
import { localDataPlane, type DataLink, type OutgoingRequest, type ReplyHead } from '../../../src/http/index.ts';

let dir: string;
let instance: Server;
let socketPath: string;
const key = generateRouteKey();
const states = new Map<string, { socketPath: string; state: InstanceState }>();

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'shoal-local-exchange-'));
  socketPath = join(dir, 'app.sock');
  instance = createServer((req, res) => {
    if (req.url === '/Spoof') {
      // Poses as the host and as another instance.
      res.writeHead(404, ['x-shoal-error', 'gone', 'x-shoal-instance', 'someone-else', 'content-type', 'application/json', 'content-length', '2']);
      res.end('{}');
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.stringify({ path: req.url, body: Buffer.concat(chunks).toString(), route: req.headers['x-shoal-route'] ?? null });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  await new Promise<void>((resolve) => instance.listen(socketPath, resolve));
  states.set('echo-1', { socketPath, state: 'ready' });
  states.set('echo-paused', { socketPath, state: 'paused' });
  states.set('echo-nosocket', { socketPath: join(dir, 'missing.sock'), state: 'ready' });
});

after(async () => {
  await new Promise<void>((resolve) => instance.close(() => resolve()));
  await rm(dir, { recursive: true, force: true });
});

interface Reply {
  status: number;
  headers: Map<string, string[]>;
  body: string;
}

function send(link: Pick<DataLink, 'request'>, path: string, token: string | undefined, body = '{"message":"hi"}'): Promise<Reply> {
  const headers = ['host', 'localhost', 'content-type', 'application/json', 'content-length', String(Buffer.byteLength(body))];
  if (token !== undefined) headers.push('x-shoal-route', token);
  const req: OutgoingRequest = { method: 'POST', path, headers, body: Buffer.from(body) };
  return new Promise((resolve, reject) => {
    let head: ReplyHead | undefined;
    const chunks: Buffer[] = [];
    link.request(req, {
      onHead: (h) => void (head = h),
      onData: (c) => void chunks.push(c),
      onEnd() {
        const map = new Map<string, string[]>();
        for (let i = 0; i < head!.headers.length; i += 2) {
          const n = head!.headers[i]!.toLowerCase();
          map.set(n, [...(map.get(n) ?? []), head!.headers[i + 1]!]);
        }
        resolve({ status: head!.status, headers: map, body: Buffer.concat(chunks).toString() });
      },
      onError: (err) => reject(err),
    });
  });
}

const token = (instance: string, operations?: string[], expiresAt = Date.now() + 60_000): string =>
  signRouteToken({ instance, service: 'echo', expiresAt, ...(operations === undefined ? {} : { operations }) }, key);

function forwarder(onRequest?: (status: number) => void) {
  const f = createForwarder({ keys: [key], resolveInstance: (id) => states.get(id), ...(onRequest ? { onRequest: (e) => onRequest(e.status) } : {}) });
  return { f, link: { request: f.exchange } };
}

test('a message with a valid token scoped to its operation reaches the instance, without the route token, with the instance header', async () => {
  const { f, link } = forwarder();
  try {
    const r = await send(link, '/i/Echo', token('echo-1', ['Echo']));
    assert.equal(r.status, 200);
    const seen = JSON.parse(r.body) as { path: string; body: string; route: string | null };
    assert.equal(seen.path, '/Echo');
    assert.equal(seen.body, '{"message":"hi"}');
    assert.equal(seen.route, null, 'the route token does not reach the instance');
    assert.deepEqual(r.headers.get('x-shoal-instance'), ['echo-1']);
    assert.equal(r.headers.get('x-shoal-error'), undefined);
  } finally {
    await f.close();
  }
});

test('missing, forged and expired tokens are refused with the token mark, before the instance sees anything', async () => {
  const { f, link } = forwarder();
  try {
    const missing = await send(link, '/i/Echo', undefined);
    assert.equal(missing.status, 401);
    assert.deepEqual(missing.headers.get('x-shoal-error'), ['token']);
    const other = signRouteToken({ instance: 'echo-1', service: 'echo', expiresAt: Date.now() + 60_000 }, generateRouteKey());
    const forged = await send(link, '/i/Echo', other);
    assert.equal(forged.status, 403);
    assert.deepEqual(forged.headers.get('x-shoal-error'), ['token']);
    const expired = await send(link, '/i/Echo', token('echo-1', ['Echo'], Date.now() - 1));
    assert.equal(expired.status, 403);
    assert.deepEqual(expired.headers.get('x-shoal-error'), ['token']);
  } finally {
    await f.close();
  }
});

test('an operation outside the token scope is refused (403 operation): a consumer cannot reach undeclared operations', async () => {
  const { f, link } = forwarder();
  try {
    const r = await send(link, '/i/Admin', token('echo-1', ['Echo']));
    assert.equal(r.status, 403);
    assert.deepEqual(r.headers.get('x-shoal-error'), ['operation']);
    const outside = await send(link, '/other', token('echo-1', ['Echo']));
    assert.equal(outside.status, 404);
    assert.deepEqual(outside.headers.get('x-shoal-error'), ['no-route']);
  } finally {
    await f.close();
  }
});

test('gone, not ready and refusing instances get the same marked replies as over HTTP; each is reported', async () => {
  const statuses: number[] = [];
  const { f, link } = forwarder((s) => statuses.push(s));
  try {
    const gone = await send(link, '/i/Echo', token('echo-gone', ['Echo']));
    assert.equal(gone.status, 404);
    assert.deepEqual(gone.headers.get('x-shoal-error'), ['gone']);
    const paused = await send(link, '/i/Echo', token('echo-paused', ['Echo']));
    assert.equal(paused.status, 503);
    assert.deepEqual(paused.headers.get('x-shoal-error'), ['not-ready']);
    assert.deepEqual(paused.headers.get('retry-after'), ['1']);
    const refused = await send(link, '/i/Echo', token('echo-nosocket', ['Echo']));
    assert.equal(refused.status, 502);
    assert.deepEqual(refused.headers.get('x-shoal-error'), ['refused']);
    assert.equal((JSON.parse(refused.body) as { error: { code: string } }).error.code, 'unavailable');
    assert.deepEqual(statuses, [404, 503, 502]);
  } finally {
    await f.close();
  }
});

test("an instance cannot pose as the host or as another instance: its x-shoal-error and x-shoal-instance are dropped", async () => {
  const { f, link } = forwarder();
  try {
    const r = await send(link, '/i/Spoof', token('echo-1'));
    assert.equal(r.status, 404);
    assert.equal(r.headers.get('x-shoal-error'), undefined);
    assert.deepEqual(r.headers.get('x-shoal-instance'), ['echo-1']);
  } finally {
    await f.close();
  }
});

test('a data server registers its forwarder for this process at its URL, counts what goes through it, and withdraws it on close', async () => {
  const server = await startDataServer({ keys: [key], resolveInstance: (id) => states.get(id), listen: { host: '127.0.0.1', port: 0 } });
  const link = localDataPlane(server.url);
  assert.ok(link, 'registered');
  assert.equal(localDataPlane(`${server.url}/`), link, 'the same origin, however written');
  const r = await send(link, '/i/Echo', token('echo-1', ['Echo']));
  assert.equal(r.status, 200);
  assert.deepEqual(server.load(), { inFlight: 0, requestsTotal: 1 });
  const before = process.env.SHOAL_DATA_LINK;
  process.env.SHOAL_DATA_LINK = 'tcp';
  try {
    assert.equal(localDataPlane(server.url), undefined, 'SHOAL_DATA_LINK=tcp turns the shortcut off');
  } finally {
    if (before === undefined) delete process.env.SHOAL_DATA_LINK;
    else process.env.SHOAL_DATA_LINK = before;
  }
  await server.close();
  assert.equal(localDataPlane(server.url), undefined);
  // A link held from before the close fails like a closed listener: nothing was sent.
  await assert.rejects(send(link, '/i/Echo', token('echo-1', ['Echo'])), (e: NodeJS.ErrnoException) => e.code === 'ECONNREFUSED');
});
