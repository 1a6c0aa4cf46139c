// A provider and a runc host in one process (as `shoal up` runs them): the provider reaches
// the host's forwarder through the in-process link (src/http/local-link.ts), and every
// security property of the path holds on it — the token on /s/, scoped invoke tokens,
// only declared operations, the input schema, the host's own route-token check — and a
// message still arrives, counted by the host.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHost, type Host } from '../../src/host/index.ts';
import type { RunningStore } from '../../src/image/index.ts';
import { localDataPlane } from '../../src/http/index.ts';
import { startProvider, type Provider } from '../../src/provider/index.ts';
import { createApiToken } from '../../src/provider/auth/index.ts';
import { skipUnless } from '../host/fixtures/requirements.ts';
import { startEchoStore } from '../provider/fixtures/echo-store.ts';

const skip = skipUnless(['root', 'runc']);
const TOKEN = 'host-token-for-tests';

describe('provider beside its host: the in-process data link', { skip }, () => {
  let store: RunningStore;
  let dir: string;
  let host: Host;
  let provider: Provider;
  let admin: string;
  let scoped: string;
  let other: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sll-'));
    store = await startEchoStore();
    host = await startHost({ dataDir: join(dir, 'h0'), listen: { host: '127.0.0.1', port: 0 }, token: TOKEN, capacity: { memoryMb: 1024, cpuMillis: 2000, instances: 4 }, driver: 'runc' });
    provider = await startProvider({ listen: { host: '127.0.0.1', port: 0 }, database: join(dir, 'p.db'), storeUrl: store.url, joinToken: 'join-token-for-tests' });
    await provider.registerHost({ controlUrl: host.controlUrl, token: TOKEN });
    admin = (await createApiToken(provider.registry, { role: 'admin' })).secret;
    scoped = (await createApiToken(provider.registry, { role: 'invoke', services: ['echo'] })).secret;
    other = (await createApiToken(provider.registry, { role: 'invoke', services: ['someone-else'] })).secret;
    const res = await fetch(`${provider.url}/api/v1/services`, {
      method: 'POST',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        name: 'echo',
        version: '1',
        image: 'echo:1',
        // Declared: Echo only. The image also serves Inspect, Crash, Hog…, which no consumer may reach.
        operations: { Echo: { input: { type: 'object', properties: { message: { type: 'string' } }, required: ['message'] }, output: { type: 'object' }, idempotent: true } },
        resources: { memoryMb: 64, cpuMillis: 500, pids: 32 },
      }),
    });
    assert.equal(res.status, 201, await res.text());
  });

  after(async () => {
    await provider?.close();
    await host?.close({ stopInstances: true });
    await store?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const send = (op: string, body: unknown, token?: string) =>
    fetch(`${provider.url}/s/echo/${op}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) },
      body: JSON.stringify(body),
    }).then(async (r) => ({ status: r.status, body: (await r.json()) as any, instance: r.headers.get('x-shoal-instance'), error: r.headers.get('x-shoal-error') }));

  it('the host registered its data plane for this process', () => {
    assert.ok(localDataPlane(host.dataUrl));
  });

  it('a message with a scoped invoke token is delivered and answered, and the host counts it', async () => {
    const r = await send('Echo', { message: 'hello' }, scoped);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.message, 'hello');
    assert.match(r.instance ?? '', /^echo-/);
    assert.equal(r.error, null);
    const again = await send('Echo', { message: 'again' }, scoped);
    assert.equal(again.status, 200);
    const report = (await (await fetch(`${host.controlUrl}/v1/report`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as { load?: { requestsTotal?: number } };
    assert.ok((report.load?.requestsTotal ?? 0) >= 2, JSON.stringify(report.load));
  });

  it('no token, or a token for another service: refused at the provider', async () => {
    assert.equal((await send('Echo', { message: 'x' })).status, 401);
    assert.equal((await send('Echo', { message: 'x' }, other)).status, 403);
  });

  it('an operation the service did not declare is refused, though the instance serves it', async () => {
    const r = await send('Inspect', {}, scoped);
    assert.equal(r.status, 404);
    assert.equal(r.body.error.field, 'operation');
  });

  it('an input that breaks the declared schema is refused before it is routed', async () => {
    const r = await send('Echo', { message: 42 }, scoped);
    assert.equal(r.status, 400);
  });

  it('the link checks the route token like the host does over HTTP: an undeclared path is refused with the operation mark', async () => {
    const link = localDataPlane(host.dataUrl)!;
    const listed = (await (await fetch(`${host.controlUrl}/v1/instances`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as { instances: Array<{ endpoint?: { token: string } }> };
    const token = listed.instances.find((i) => i.endpoint !== undefined)!.endpoint!.token;
    const status = await new Promise<{ status: number; mark: string | undefined }>((resolve, reject) => {
      link.request(
        { method: 'POST', path: '/i/Inspect', headers: ['host', 'localhost', 'content-type', 'application/json', 'content-length', '2', 'x-shoal-route', token], body: Buffer.from('{}') },
        {
          onHead: (h) => {
            const i = h.headers.findIndex((n, k) => k % 2 === 0 && n.toLowerCase() === 'x-shoal-error');
            resolve({ status: h.status, mark: i === -1 ? undefined : h.headers[i + 1] });
          },
          onData: () => undefined,
          onEnd: () => undefined,
          onError: reject,
        },
      );
    });
    assert.deepEqual(status, { status: 403, mark: 'operation' });
  });
});
