// The Adventure Works farm on runc: `shoal apply examples/adventure-works/farm.ts` brings it
// up (three images built from the TypeScript services), `shoal call order-entry
// SubmitOrder` places an order, and with orders flowing an OrderEntry instance and payment1
// are killed (SIGKILL): every order is answered, none is processed twice, and payment1's
// crash rebound the ref to payment2 with no script running.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startHost, type Host } from '../../src/host/index.ts';
import { createRegistryClient, startStore, type RunningStore } from '../../src/image/index.ts';
import { startProvider, type Provider } from '../../src/provider/index.ts';
import { createApiToken } from '../../src/provider/auth/index.ts';
import { applyFarm } from '../../src/compose/apply.ts';
import { skipUnless } from '../host/fixtures/requirements.ts';
import { echoStoreDir } from '../provider/fixtures/echo-store.ts';
import { until } from '../fixtures/until.ts';
import { buildAdventureWorks } from '../../examples/adventure-works/build.ts';
import { startCredit, type CreditService } from '../../examples/adventure-works/credit.ts';

const skip = skipUnless(['root', 'runc']);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FARM = join(ROOT, 'examples/adventure-works/farm.ts');
const TOKEN = 'host-token-for-tests';
const INSTANCES = ['payment1', 'payment2', 'processing', 'entry1', 'entry2'].map((n) => `adventure-works-${n}`);

/** SIGKILL every process of an instance (its cgroup is named by its id): a crash, as the host sees it. */
async function kill(instanceId: string): Promise<void> {
  const dirs = execFileSync('find', ['/sys/fs/cgroup', '-maxdepth', '6', '-type', 'd', '-name', instanceId], { encoding: 'utf8' }).trim().split('\n').filter(Boolean);
  assert.ok(dirs.length > 0, `no cgroup for ${instanceId}`);
  const pids = (await readFile(join(dirs[0]!, 'cgroup.procs'), 'utf8')).trim().split('\n').filter(Boolean).map(Number);
  assert.ok(pids.length > 0);
  for (const pid of pids) process.kill(pid, 'SIGKILL');
}

const order = (i: number) => ({ orderId: `o-${i}`, customer: `c${i}`, items: [{ sku: 'bike', quantity: 1 + (i % 3) }], card: '4111111111111111' });

describe('Adventure Works on runc', { skip }, () => {
  let dir: string;
  let store: RunningStore;
  let host: Host;
  let provider: Provider;
  let credit: CreditService;
  let admin: string;
  const auth = () => ({ authorization: `Bearer ${admin}` });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'aw-'));
    // A private copy of the cached store (template + echo), to push the three AW images into.
    await cp(await echoStoreDir(), join(dir, 'store'), { recursive: true });
    store = await startStore({ dataDir: join(dir, 'store') });
    await buildAdventureWorks(createRegistryClient({ baseUrl: store.url }));
    host = await startHost({ dataDir: join(dir, 'host'), listen: { host: '127.0.0.1', port: 0 }, token: TOKEN, capacity: { memoryMb: 4096, cpuMillis: 8000, instances: 16 }, driver: 'runc' });
    provider = await startProvider({
      listen: { host: '127.0.0.1', port: 0 },
      database: join(dir, 'p.db'),
      storeUrl: store.url,
      joinToken: 'join-token-for-tests',
      tuning: { reportIntervalMs: 200, suspectAfterMs: 2000, deadAfterMs: 5000, scaleIntervalMs: 200, syncIntervalMs: 500 },
    });
    await provider.registerHost({ controlUrl: host.controlUrl, token: TOKEN });
    admin = (await createApiToken(provider.registry, { role: 'admin' })).secret;
    credit = await startCredit({ delayMs: 3 });
    process.env.AW_CREDIT_URL = credit.url; // the farm script imports it from outside the farm
  });

  after(async () => {
    await provider?.close();
    await host?.close({ stopInstances: true });
    await credit?.close();
    await store?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('shoal apply brings it up; applying again changes nothing; shoal call places an order', async () => {
    const first = await applyFarm(FARM, { url: provider.url, token: admin });
    assert.equal(first.changed, true);
    assert.deepEqual([...first.services].sort(), [...INSTANCES].sort());
    await until('five instances ready', () => INSTANCES.every((s) => provider.table.endpoints(s).length === 1), 60_000);
    const again = await applyFarm(FARM, { url: provider.url, token: admin });
    assert.equal(again.changed, false);

    // Asynchronously: the provider answering it runs in this process.
    const r = await promisify(execFile)(process.execPath, [join(ROOT, 'bin/shoal.js'), 'call', 'order-entry', 'SubmitOrder', JSON.stringify(order(0)), '--url', provider.url, '--token', admin, '--json'], { encoding: 'utf8' });
    const reply = JSON.parse(r.stdout) as { orderId: string; status: string; authorization: string };
    assert.equal(reply.orderId, 'o-0');
    assert.equal(reply.status, 'accepted');
    assert.match(reply.authorization, /^auth-[0-9a-f]{12}$/);
  });

  it('orders keep flowing while entry1 and payment1 are killed: every order answered, none processed twice, the ref rebound', async () => {
    const N = 80;
    const replies: Array<{ status: number; body: { orderId?: string; status?: string } }> = [];
    let next = 1;
    const worker = async () => {
      while (next <= N) {
        const i = next++;
        const res = await fetch(`${provider.url}/s/order-entry/SubmitOrder`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth() }, body: JSON.stringify(order(i)) });
        replies.push({ status: res.status, body: (await res.json()) as { orderId?: string } });
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    const flowing = Promise.all(Array.from({ length: 4 }, worker));
    await until('orders flowing', () => replies.length >= 10, 60_000);
    const entry1 = provider.table.endpoints('adventure-works-entry1')[0]!.id;
    const payment1 = provider.table.endpoints('adventure-works-payment1')[0]!.id;
    await kill(entry1);
    await until('a few more orders', () => replies.length >= 30, 60_000);
    await kill(payment1);
    await flowing;

    assert.equal(replies.length, N);
    const failed = replies.filter((r) => r.status !== 200);
    assert.deepEqual(failed, [], 'every order answered');
    assert.deepEqual(replies.map((r) => r.body.orderId).sort(), Array.from({ length: N }, (_, i) => `o-${i + 1}`).sort());

    const rec = (await (await fetch(`${provider.url}/x/adventure-works/processing/Processed`, { method: 'POST', headers: { ...auth(), 'content-type': 'application/json' }, body: '{}' })).json()) as { orders: Record<string, number>; duplicates: number };
    for (let i = 0; i <= N; i++) assert.equal(rec.orders[`o-${i}`], 1, `o-${i} processed exactly once`);
    assert.equal(Object.keys(rec.orders).length, N + 1);

    await until('crash rule applied', () => provider.farms.get('adventure-works')!.refs['payment-ref'] === 'payment2', 10_000);
    const status = provider.farms.get('adventure-works')!;
    assert.ok(status.crashes.some((c) => c.instance === 'payment1'));
    assert.ok(credit.answered() > 0, 'par sent to the external credit service too');
  });
});
