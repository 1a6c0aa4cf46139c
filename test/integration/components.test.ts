// Issue 13, items 1 and 3 end to end: the echo service and the Adventure Works Payment
// service, their TypeScript source unchanged, built as isolate component images (the
// bundle alone, labelled dev.shoal.driver=isolate) and run by a host's isolate driver;
// `shoal call` reaches them through the provider. A pool without the isolate driver
// refuses the component image with the driver named.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startHost, type Host } from '../../src/host/index.ts';
import { buildComponentImage, createRegistryClient, startStore, type RunningStore } from '../../src/image/index.ts';
import { parseImageRef } from '../../src/protocol/image-ref.ts';
import { startProvider, type Provider } from '../../src/provider/index.ts';
import { createApiToken } from '../../src/provider/auth/index.ts';
import { toServiceDescription } from '../../src/service/index.ts';
import { Echo } from '../../examples/echo/echo.ts';
import { Payment } from '../../examples/adventure-works/definitions.ts';
import { FAST } from '../provider/fixtures/provider.ts';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SHOAL = join(ROOT, 'bin/shoal.js');
const JOIN = 'join-token-for-component-tests';
const HOST_TOKEN = 'host-token-for-component-tests';

describe('isolate components through the provider', () => {
  let dir: string;
  let store: RunningStore;
  let provider: Provider;
  let host: Host;
  let admin: string;
  const images: Record<string, string> = {};

  const api = (path: string, body: unknown, token = admin) =>
    fetch(`${provider.url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const shoalCall = async (service: string, op: string, input: unknown) => {
    const { stdout } = await run(process.execPath, [SHOAL, 'call', service, op, JSON.stringify(input), '--url', provider.url, '--token', admin, '--json'], { encoding: 'utf8' });
    return JSON.parse(stdout) as Record<string, unknown>;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-components-'));
    store = await startStore({ dataDir: join(dir, 'store') });
    const client = createRegistryClient({ baseUrl: store.url });
    for (const [tag, entry] of [
      ['echo-iso:1', join(ROOT, 'examples/echo/service.ts')],
      ['payment-iso:1', join(ROOT, 'examples/adventure-works/payment.ts')],
    ] as const) {
      images[tag] = (await buildComponentImage({ client, entry, ref: parseImageRef(tag), driver: 'isolate' })).reference;
    }
    provider = await startProvider({ listen: { host: '127.0.0.1', port: 0 }, database: join(dir, 'shoal.db'), storeUrl: store.url, joinToken: JOIN, tuning: FAST });
    admin = (await createApiToken(provider.registry, { role: 'admin' })).secret;
  });

  after(async () => {
    await host?.close();
    await provider?.close();
    await store?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('a component image is one layer with the driver and entry labels and no runtime', async () => {
    const client = createRegistryClient({ baseUrl: store.url });
    const m = await client.getManifest('echo-iso', '1');
    assert.ok(m);
    const manifest = JSON.parse(m.bytes.toString('utf8')) as { config: { digest: string }; layers: unknown[] };
    assert.equal(manifest.layers.length, 1, 'the bundle alone: no node template layers');
    const chunks: Buffer[] = [];
    for await (const c of await client.fetchBlob('echo-iso', manifest.config.digest as never)) chunks.push(c as Buffer);
    const config = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { config: { Labels: Record<string, string>; Cmd: string[] } };
    assert.equal(config.config.Labels['dev.shoal.driver'], 'isolate');
    assert.equal(config.config.Labels['dev.shoal.entry'], '/app/service.mjs');
    assert.deepEqual(config.config.Cmd, ['/app/service.mjs']);
  });

  it('refuses a component image while no host offers its driver, naming the driver', async () => {
    const process = await startHost({ dataDir: join(dir, 'h-process'), listen: { host: '127.0.0.1', port: 0 }, token: HOST_TOKEN, capacity: { memoryMb: 1024, cpuMillis: 2000, instances: 4 }, driver: 'process' });
    try {
      const joined = await api('/api/v1/hosts', { controlUrl: process.controlUrl, token: HOST_TOKEN }, JOIN);
      assert.equal(joined.status, 201, await joined.clone().text());
      const registered = await api('/api/v1/services', { ...toServiceDescription(Echo), image: 'echo-iso:1', access: 'public' });
      assert.ok(registered.ok, await registered.clone().text());
      const reply = await fetch(`${provider.url}/s/echo/Echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ message: 'hi' }) });
      const text = await reply.text();
      assert.ok(reply.status >= 500, `${reply.status} ${text}`);
      assert.match(text, /isolate component: no host in the pool offers the isolate driver/);
      const left = await fetch(`${provider.url}/api/v1/hosts/${encodeURIComponent(joined.headers.get('location')?.split('/').pop() ?? '')}`, { method: 'DELETE', headers: { authorization: `Bearer ${admin}` } });
      void left;
    } finally {
      await process.close();
    }
  });

  it('echo and payment run as isolate components; shoal call reaches them through the provider', async () => {
    host = await startHost({ dataDir: join(dir, 'h-isolate'), listen: { host: '127.0.0.1', port: 0 }, token: HOST_TOKEN, capacity: { memoryMb: 2048, cpuMillis: 4000, instances: 8 }, driver: 'isolate' });
    const joined = await api('/api/v1/hosts', { controlUrl: host.controlUrl, token: HOST_TOKEN }, JOIN);
    assert.equal(joined.status, 201, await joined.clone().text());
    const registered = await api('/api/v1/services', { ...toServiceDescription(Payment, { image: 'payment-iso:1' }), driver: 'isolate' });
    assert.ok(registered.ok, await registered.clone().text());

    assert.deepEqual(await shoalCall('echo', 'Echo', { message: 'from an isolate' }), { message: 'from an isolate' });
    const order = { orderId: 'o-1', card: '4111111111111111', amount: 12.5 };
    const auth = await shoalCall('payment', 'Authorize', order);
    // The same derivation as under runc: node:crypto's sha256, through the runner.
    const expected = `auth-${createHash('sha256').update(`${order.orderId}:${order.card.slice(-4)}:${order.amount}`).digest('hex').slice(0, 12)}`;
    assert.equal(auth.authorization, expected);
    assert.match(String(auth.by), /^payment@/);
    // What the instance sees of an operating system: none of the host's (its node:fs
    // calls throw, which Inspect catches; no interfaces, no processes).
    const inspect = await shoalCall('echo', 'Inspect', {});
    assert.deepEqual(inspect.interfaces, []);
    assert.equal(inspect.processes, 0);
    assert.notEqual(inspect.hostname, (await import('node:os')).hostname(), 'the hostname is the instance id, not the host');
    const [ep] = provider.table.endpoints('echo');
    assert.equal(ep?.hostId !== undefined, true);
  });
});
