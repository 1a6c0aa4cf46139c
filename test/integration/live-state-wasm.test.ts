// Live state end to end with real parts: one store, two host agents on loopback ports
// with the wasm driver, the counter component built from WAT as a component image.
// Snapshot on host A → restore on host B continues the count; forks diverge; a snapshot
// taken while messages are in flight loses and duplicates none.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { buildWasmComponentImage, createRegistryClient, resolveRemoteImage, startStore, type RunningStore } from '../../src/image/index.ts';
import { parseImageRef } from '../../src/protocol/image-ref.ts';
import { stateRepository } from '../../src/protocol/store-api.ts';
import type { DeploymentPlan, DeploymentResult } from '../../src/protocol/deployment.ts';
import { componentWasm } from '../fixtures/components.ts';
import { startTestHost, type HostFixture, type StoreFixture } from './host-fixture.ts';
import { skipUnless } from '../host/fixtures/requirements.ts';

const skip = skipUnless(['root']);

describe('live state of wasm components across two hosts', { skip }, () => {
  let dir: string;
  let store: RunningStore;
  let image: string;
  let a: HostFixture;
  let b: HostFixture;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-live-'));
    store = await startStore({ dataDir: join(dir, 'store') });
    const module = join(dir, 'counter.wasm');
    await writeFile(module, await componentWasm(4));
    const built = await buildWasmComponentImage({ client: createRegistryClient({ baseUrl: store.url }), module, ref: parseImageRef('counter:1') });
    image = built.reference;
    const fx = { store, echoRef: image, echoLayerBytes: 0, close: async () => {} } satisfies StoreFixture;
    a = await startTestHost(fx, { driver: 'wasm' });
    b = await startTestHost(fx, { driver: 'wasm' });
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await store?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const plan = (over: Partial<DeploymentPlan> = {}): DeploymentPlan => ({
    service: { name: 'counter', version: '1' },
    image,
    store: store.url,
    driver: 'wasm',
    resources: { memoryMb: 16, cpuMillis: 100, pids: 4 },
    readiness: { timeoutMs: 10_000 },
    ...over,
  });
  const deploy = async (h: HostFixture, over: Partial<DeploymentPlan> = {}) => {
    const r = await h.api('/v1/instances', { method: 'POST', body: plan(over) });
    assert.equal(r.status, 201, r.text);
    return r.json as DeploymentResult;
  };

  it('the component image names its driver and entry in its config labels', async () => {
    const client = createRegistryClient({ baseUrl: store.url });
    const m = await client.getManifest('counter', '1');
    const manifest = JSON.parse(m!.bytes.toString('utf8'));
    const config = JSON.parse((await new Response((await client.fetchBlob('counter', manifest.config.digest)) as any).text()));
    assert.equal(config.config.Labels['dev.shoal.driver'], 'wasm');
    assert.equal(config.config.Labels['dev.shoal.entry'], '/component.wasm');
    // what the provider's placement reads: only hosts offering this driver are candidates
    assert.equal((await resolveRemoteImage(client, 'counter:1')).driver, 'wasm');
  });

  it('snapshot on host A restores on host B and the next call continues the count', async () => {
    const src = await deploy(a);
    for (let i = 1; i <= 3; i++) assert.deepEqual((await a.call(src.endpoint, 'inc', {})).json, { count: i, calls: i });
    const snap = await a.api(`/v1/instances/${src.instance.id}/snapshot`, { method: 'POST' });
    assert.equal(snap.status, 201, snap.text);
    assert.match(snap.json.digest, /^sha256:[a-f0-9]{64}$/);
    assert.equal(snap.json.annotations['dev.shoal.driver'], 'wasm');
    // stored as an OCI 1.1 artifact apart from the images (only deploy tokens read states)
    const m = await createRegistryClient({ baseUrl: store.url }).getManifest(stateRepository('counter'), snap.json.digest);
    assert.equal(JSON.parse(m!.bytes.toString('utf8')).artifactType, 'application/vnd.shoal.state.v1');

    const restored = await deploy(b, { from: snap.json.digest });
    assert.deepEqual((await b.call(restored.endpoint, 'inc', {})).json, { count: 4, calls: 4 });
    // the source keeps its own count
    assert.deepEqual((await a.call(src.endpoint, 'inc', {})).json, { count: 4, calls: 4 });
    assert.deepEqual((await b.call(restored.endpoint, 'inc', {})).json, { count: 5, calls: 5 });
  });

  it('a fork on the same host diverges independently while the source keeps serving', async () => {
    const src = await deploy(a);
    for (let i = 0; i < 2; i++) await a.call(src.endpoint, 'inc', {});
    const fork = await a.api(`/v1/instances/${src.instance.id}/fork`, { method: 'POST' });
    assert.equal(fork.status, 201, fork.text);
    assert.notEqual(fork.json.instance.id, src.instance.id);
    assert.deepEqual((await a.call(fork.json.endpoint, 'inc', {})).json, { count: 3, calls: 3 });
    assert.deepEqual((await a.call(fork.json.endpoint, 'inc', {})).json, { count: 4, calls: 4 });
    assert.deepEqual((await a.call(src.endpoint, 'inc', {})).json, { count: 3, calls: 3 });
  });

  it('a snapshot while messages are in flight loses and duplicates nothing', async () => {
    const src = await deploy(a);
    const n = 60;
    const calls = Array.from({ length: n }, () => a.call(src.endpoint, 'inc', {}));
    const snap = await a.api(`/v1/instances/${src.instance.id}/snapshot`, { method: 'POST' });
    const replies = await Promise.all(calls);
    assert.equal(snap.status, 201, snap.text);
    assert.ok(replies.every((r) => r.status === 200));
    const counts = replies.map((r) => r.json.count as number).sort((x, y) => x - y);
    assert.deepEqual(counts, Array.from({ length: n }, (_, i) => i + 1));
    // The state holds a whole prefix of the messages: the restored copy continues right after it.
    const restored = await deploy(b, { from: snap.json.digest });
    const next = (await b.call(restored.endpoint, 'get', {})).json.count as number;
    assert.ok(next >= 0 && next <= n);
    assert.deepEqual((await b.call(restored.endpoint, 'inc', {})).json.count, next + 1);
  });

  it('a move under load (snapshot with hold on A, restore on B, remove on A) loses and duplicates nothing', async () => {
    const src = await deploy(a);
    const n = 40;
    // What the provider's router does with a host's `gone` (never delivered): send it to the new endpoint.
    let target: DeploymentResult | undefined;
    const targetReady = new Promise<DeploymentResult>((resolve) => {
      const t = setInterval(() => {
        if (target) {
          clearInterval(t);
          resolve(target);
        }
      }, 5);
    });
    const sendOne = async (): Promise<{ host: 'a' | 'b'; count: number }> => {
      const r = await a.call(src.endpoint, 'inc', {});
      if (r.status === 200) return { host: 'a', count: r.json.count };
      assert.equal(r.status, 404, JSON.stringify(r.json)); // gone: never delivered
      const moved = await targetReady;
      const r2 = await b.call(moved.endpoint, 'inc', {});
      assert.equal(r2.status, 200);
      return { host: 'b', count: r2.json.count };
    };
    const sent = Array.from({ length: n }, (_, i) => new Promise((r) => setTimeout(r, i)).then(sendOne));
    await new Promise((r) => setTimeout(r, 10));
    const snap = await a.api(`/v1/instances/${src.instance.id}/snapshot?hold=1`, { method: 'POST' });
    assert.equal(snap.status, 201, snap.text);
    target = await deploy(b, { from: snap.json.digest });
    assert.equal((await a.api(`/v1/instances/${src.instance.id}`, { method: 'DELETE' })).status, 200);
    const results = await Promise.all(sent);
    const counts = results.map((r) => r.count).sort((x, y) => x - y);
    assert.deepEqual(counts, Array.from({ length: n }, (_, i) => i + 1));
    // every count A answered came before every count B answered: one history, moved once
    const maxA = Math.max(0, ...results.filter((r) => r.host === 'a').map((r) => r.count));
    const minB = Math.min(n + 1, ...results.filter((r) => r.host === 'b').map((r) => r.count));
    assert.ok(maxA < minB);
  });

  it('refuses a state on a plan whose image is not the one it was captured from', async () => {
    const r = await b.api('/v1/instances', { method: 'POST', body: plan({ from: `sha256:${'0'.repeat(64)}` }) });
    assert.equal(r.status, 404, r.text);
  });
});
