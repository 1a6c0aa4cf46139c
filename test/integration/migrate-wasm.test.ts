// A move through the provider, real parts: one store, a provider, two host agents with the
// wasm driver. Messages keep flowing through the provider while the counter moves from
// one host to the other; every message is handled exactly once and the count continues.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { buildWasmComponentImage, createRegistryClient, startStore, type RunningStore } from '../../src/image/index.ts';
import { startHost, type Host } from '../../src/host/index.ts';
import { startProvider, type Provider } from '../../src/provider/index.ts';
import { createApiToken } from '../../src/provider/auth/index.ts';
import { parseImageRef } from '../../src/protocol/image-ref.ts';
import { componentWasm } from '../fixtures/components.ts';
import { FAST } from '../provider/fixtures/provider.ts';
import { skipUnless } from '../host/fixtures/requirements.ts';

const skip = skipUnless(['root']);
const HOST_TOKEN = 'host-test-token-0123456789';

describe('moving a wasm component between hosts through the provider', { skip }, () => {
  let dir: string;
  let store: RunningStore;
  let provider: Provider;
  let token: string;
  const hosts: Host[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-move-'));
    store = await startStore({ dataDir: join(dir, 'store') });
    await writeFile(join(dir, 'counter.wasm'), await componentWasm(4));
    await buildWasmComponentImage({ client: createRegistryClient({ baseUrl: store.url }), module: join(dir, 'counter.wasm'), ref: parseImageRef('counter:1') });
    provider = await startProvider({ listen: { host: '127.0.0.1', port: 0 }, database: join(dir, 'shoal.db'), storeUrl: store.url, joinToken: 'join-token-for-tests', tuning: FAST });
    token = (await createApiToken(provider.registry, { role: 'admin', note: 'test' })).secret;
    for (const name of ['a', 'b']) {
      const h = await startHost({ dataDir: join(dir, name), listen: { host: '127.0.0.1', port: 0 }, token: HOST_TOKEN, capacity: { memoryMb: 4096, cpuMillis: 8000, instances: 20 }, driver: 'wasm' });
      hosts.push(h);
      await provider.registerHost({ controlUrl: h.controlUrl, token: HOST_TOKEN });
    }
    const op = { input: { type: 'object' }, output: { type: 'object' } };
    // One replica: a stateful component scaled out would diverge (each replica has its own count).
    await provider.registerService({ name: 'counter', version: '1', image: 'counter:1', driver: 'wasm', resources: { memoryMb: 16, cpuMillis: 100, pids: 4 }, scaling: { min: 1, max: 1 }, operations: { inc: op, get: { ...op, idempotent: true } } });
  });
  after(async () => {
    await provider?.close();
    for (const h of hosts) await h.close();
    await store?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(provider.url + path, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    return { status: res.status, text, json: text ? JSON.parse(text) : undefined };
  };

  it('keeps every message exactly once and the count going while the instance moves', async () => {
    for (let i = 1; i <= 3; i++) {
      const r = await api('POST', '/s/counter/inc', {});
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.count, i);
    }
    const listed = await api('GET', '/api/v1/instances');
    const instances = (listed.json.instances as Array<{ id: string; host: string; service: string }>).filter((i) => i.service === 'counter');
    assert.equal(instances.length, 1, listed.text);
    const before = instances[0]!;
    const n = 30;
    const sent = Array.from({ length: n }, (_, i) => new Promise((r) => setTimeout(r, i)).then(() => api('POST', '/s/counter/inc', {})));
    await new Promise((r) => setTimeout(r, 5));
    const moved = await api('POST', `/api/v1/instances/${before.id}/migrate`, {});
    assert.equal(moved.status, 201, moved.text);
    assert.notEqual(moved.json.to.host, moved.json.from.host);
    const replies = await Promise.all(sent);
    for (const r of replies) assert.equal(r.status, 200, r.text);
    assert.deepEqual(
      replies.map((r) => r.json.count as number).sort((x, y) => x - y),
      Array.from({ length: n }, (_, i) => i + 4),
    );
    const after = await api('POST', '/s/counter/inc', {});
    assert.equal(after.json.count, n + 4);
    const now = (await api('GET', '/api/v1/instances')).json.instances.filter((i: { service: string }) => i.service === 'counter');
    assert.deepEqual(now.map((i: { id: string }) => i.id), [moved.json.to.instance]);
  });
});
