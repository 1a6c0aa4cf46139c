// A live move of a VM through the provider, real parts: one store (the node template and a
// counter image), a provider, two host agents with the vm driver (QEMU). Clients keep
// sending while the counter VM moves from one host to the other by pre-copy; every message
// is answered exactly once, the count continues, and the source host keeps no QEMU.
import assert from 'node:assert/strict';
import { copyFile, cp, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { buildImage, createRegistryClient, startStore, type RunningStore } from '../../src/image/index.ts';
import { startHost, type Host } from '../../src/host/index.ts';
import { startProvider, type Provider } from '../../src/provider/index.ts';
import { createApiToken } from '../../src/provider/auth/index.ts';
import { parseImageRef } from '../../src/protocol/image-ref.ts';
import { skipUnless } from '../host/fixtures/requirements.ts';
import { echoStoreDir } from '../provider/fixtures/echo-store.ts';
import { installTestKernel } from '../host/drivers/vm/kernel-cache.ts';
import { until } from '../fixtures/until.ts';

const skip = skipUnless(['root', 'qemu', 'cc']);
const HOST_TOKEN = 'host-test-token-0123456789';
const COUNTER = fileURLToPath(new URL('../host/drivers/vm/counter.mjs', import.meta.url));

describe('moving a VM live between hosts through the provider', { skip }, () => {
  let dir = '';
  let store: RunningStore | undefined;
  let provider: Provider | undefined;
  let token = '';
  const hosts: Host[] = [];

  before(async () => {
    // Live moves are opt-in on the vm driver (src/host/drivers/vm/index.ts, liveMigration).
    process.env.SHOAL_VM_LIVE_MIGRATION = '1';
    dir = await mkdtemp(join(tmpdir(), 'shoal-move-vm-'));
    await cp(await echoStoreDir(), join(dir, 'store'), { recursive: true });
    store = await startStore({ dataDir: join(dir, 'store') });
    const app = join(dir, 'counter-src');
    await mkdir(join(app, 'app'), { recursive: true });
    await copyFile(COUNTER, join(app, 'app', 'counter.mjs'));
    await buildImage({
      client: createRegistryClient({ baseUrl: store.url }),
      source: app,
      template: parseImageRef(`template://node/${process.versions.node.split('.')[0]}`),
      ref: parseImageRef('vm-counter:1'),
      owner: { uid: 0, gid: 0 },
      process: { cmd: ['/usr/local/bin/node', '/app/counter.mjs'], workdir: '/app' },
    });
    provider = await startProvider({
      listen: { host: '127.0.0.1', port: 0 },
      database: join(dir, 'p.db'),
      storeUrl: store.url,
      joinToken: 'join-token-for-tests',
      tuning: { reportIntervalMs: 200, suspectAfterMs: 5000, deadAfterMs: 60_000, scaleIntervalMs: 200, syncIntervalMs: 500 },
    });
    token = (await createApiToken(provider.registry, { role: 'admin', note: 'test' })).secret;
    for (const name of ['a', 'b']) {
      await installTestKernel(join(dir, name));
      const h = await startHost({ dataDir: join(dir, name), listen: { host: '127.0.0.1', port: 0 }, token: HOST_TOKEN, capacity: { memoryMb: 2048, cpuMillis: 2000, instances: 4 }, driver: 'vm' });
      hosts.push(h);
      await provider.registerHost({ controlUrl: h.controlUrl, token: HOST_TOKEN });
    }
    // One replica: each VM has its own count. Count is not idempotent: the router retries it only when it was never delivered.
    await provider.registerService({
      name: 'counter',
      version: '1',
      image: 'vm-counter:1',
      driver: 'vm',
      resources: { memoryMb: 192, cpuMillis: 1000, pids: 64 },
      scaling: { min: 1, max: 1, idleTimeoutMs: 600_000 },
      operations: { Count: { input: { type: 'object' }, output: { type: 'object' } } },
    });
    await until('the counter VM is ready', () => provider!.table.endpoints('counter').length === 1, 600_000);
  });

  after(async () => {
    await provider?.close();
    for (const h of hosts) await h.close({ stopInstances: true });
    await store?.close();
    if (dir) {
      await until('no QEMU of this test left', async () => (await qemuPidsUnder(dir)).length === 0, 30_000);
      await rm(dir, { recursive: true, force: true });
    }
  });

  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(provider!.url + path, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(300_000),
    });
    const text = await res.text();
    return { status: res.status, text, json: text ? JSON.parse(text) : undefined };
  };

  it('answers every message exactly once and the count goes on while the VM moves live (or, its target failing, by stop-and-copy)', async () => {
    for (let i = 1; i <= 3; i++) {
      const r = await api('POST', '/s/counter/Count', {});
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.count, i);
    }
    const bootId = (await api('POST', '/s/counter/Count', {})).json.bootId as string;
    const instances = (await api('GET', '/api/v1/instances')).json.instances.filter((i: { service: string }) => i.service === 'counter') as Array<{ id: string; host: string }>;
    assert.equal(instances.length, 1);
    const before = instances[0]!;
    const sourceHost = hosts.find((h) => h.agent.list().some((i) => i.id === before.id))!;
    const sourceQemus = (await qemuPidsUnder(join(dir, sourceHost === hosts[0] ? 'a' : 'b'))).length;
    assert.equal(sourceQemus, 1);

    // Four clients, each sending one message after another with 25 ms between, for the whole move.
    let moving = true;
    const replies: Array<{ status: number; text: string; json: { count: number } }> = [];
    const client = async (): Promise<void> => {
      while (moving) {
        replies.push(await api('POST', '/s/counter/Count', {}));
        await new Promise((r) => setTimeout(r, 25));
      }
    };
    const clients = [client(), client(), client(), client()];
    await new Promise((r) => setTimeout(r, 300));
    const moved = await api('POST', `/api/v1/instances/${before.id}/migrate`, {});
    await new Promise((r) => setTimeout(r, 300));
    moving = false;
    await Promise.all(clients);
    assert.equal(moved.status, 201, moved.text);
    // Live, or — when the target's guest failed after the switch-over (QEMU 7.2 TCG under
    // load, docs/vm-driver.md "Left open") — stop-and-copy from the source that resumed,
    // with the live failure said. The driver's own test (live-migration.test.ts) demands a
    // live move; here, under load, what must hold is below: no message lost or run twice.
    if (moved.json.mode !== 'live') {
      assert.equal(moved.json.mode, 'stop-and-copy', moved.text);
      assert.match(moved.json.liveFailed, /target failed after the switch-over/, moved.text);
      console.log(`the live move fell back to stop-and-copy: ${moved.json.liveFailed}`);
    }
    assert.notEqual(moved.json.to.host, moved.json.from.host);
    for (const r of replies) assert.equal(r.status, 200, r.text);
    // Exactly once: the counts seen are 5, 6, … with none missing and none twice.
    const counts = replies.map((r) => r.json.count).sort((x, y) => x - y);
    assert.deepEqual(counts, Array.from({ length: replies.length }, (_, i) => i + 5));
    const after = await api('POST', '/s/counter/Count', {});
    assert.equal(after.json.count, replies.length + 5, 'the count continues on the target');
    assert.equal((after.json as unknown as { bootId: string }).bootId, bootId, 'the same boot of the guest: it moved, nothing restarted');
    const now = (await api('GET', '/api/v1/instances')).json.instances.filter((i: { service: string }) => i.service === 'counter');
    assert.deepEqual(now.map((i: { id: string }) => i.id), [moved.json.to.instance]);
    // The source's QEMU is gone with the old instance.
    await until('the source QEMU is gone', async () => (await qemuPidsUnder(join(dir, sourceHost === hosts[0] ? 'a' : 'b'))).length === 0, 30_000);
    console.log(`${moved.json.mode} move through the provider: ${replies.length} messages during it; ${JSON.stringify(moved.json.live ?? moved.json.state)}`);
  });
});

/** QEMU processes whose command line names a path under `dir`. */
async function qemuPidsUnder(dir: string): Promise<number[]> {
  const out: number[] = [];
  for (const p of await readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    const cmd = await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
    if (cmd.startsWith('qemu-system') && cmd.includes(dir)) out.push(Number(p));
  }
  return out;
}
