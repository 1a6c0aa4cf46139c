// Adventure Works, live (issue 15): Payment and OrderProcessing run as wasm components
// (QuickJS) next to OrderEntry under runc, on two hosts. When Payment's runner is killed,
// the farm's crash rule restores its newest snapshot, so its count of authorizations
// continues; `shoal migrate` moves OrderProcessing to the other host while orders flow, and
// its record (memory) moves with it: every order answered, each processed exactly once.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdtemp, readdir, readFile, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startHost, type Host } from '../../src/host/index.ts';
import { createRegistryClient, startStore, type RunningStore } from '../../src/image/index.ts';
import { startProvider, type Provider } from '../../src/provider/index.ts';
import { createApiToken } from '../../src/provider/auth/index.ts';
import { applyFarm } from '../../src/compose/apply.ts';
import { skipUnless } from '../host/fixtures/requirements.ts';
import { echoStoreDir } from '../provider/fixtures/echo-store.ts';
import { until } from '../fixtures/until.ts';
import { buildAdventureWorks, buildAdventureWorksLive } from '../../examples/adventure-works/build.ts';

const skip = skipUnless(['root', 'runc']);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FARM = join(ROOT, 'examples/adventure-works/farm-live.ts');
const SHOAL = join(ROOT, 'bin/shoal.js');
const TOKEN = 'host-token-for-tests';
const PAYMENT = 'adventure-works-live-payment';
const PROCESSING = 'adventure-works-live-processing';
const ENTRY = 'adventure-works-live-entry';

const order = (i: number) => ({ orderId: `o-${i}`, customer: `c${i}`, items: [{ sku: 'bike', quantity: 1 + (i % 3) }], card: '4111111111111111' });

/**
 * The process holding the listening unix socket at `path` (a wasm instance's runner), other
 * than this one. The socket was bound under a temporary name in the same directory, which
 * is the name /proc/net/unix shows (src/host/drivers/shared/listener.ts).
 */
async function holderOf(path: string): Promise<number> {
  const lines = (await readFile('/proc/net/unix', 'utf8')).split('\n').filter((l) => l.includes(` ${dirname(path)}/`));
  assert.ok(lines.length > 0, `no socket at ${path}`);
  // The listener and the connections it accepted carry the name.
  const inodes = new Set(lines.map((l) => `socket:[${l.trim().split(/\s+/)[6]}]`));
  for (const pid of (await readdir('/proc')).filter((p) => /^\d+$/.test(p))) {
    if (Number(pid) === process.pid) continue;
    const fds = await readdir(`/proc/${pid}/fd`).catch(() => []);
    for (const fd of fds) if (inodes.has(await readlink(`/proc/${pid}/fd/${fd}`).catch(() => ''))) return Number(pid);
  }
  throw new Error(`no process holds ${path}`);
}

describe('Adventure Works, live: components restored from snapshots and moved with their state', { skip, timeout: 300_000 }, () => {
  let dir: string;
  let store: RunningStore;
  const hosts: Host[] = [];
  let provider: Provider;
  let admin: string;
  const auth = () => ({ authorization: `Bearer ${admin}`, 'content-type': 'application/json' });
  const post = async (path: string, body: unknown) => {
    const res = await fetch(provider.url + path, { method: 'POST', headers: auth(), body: JSON.stringify(body) });
    const text = await res.text();
    return { status: res.status, text, json: text ? JSON.parse(text) : undefined };
  };
  const get = async (path: string) => (await fetch(provider.url + path, { headers: auth() })).json();
  const shoal = (...args: string[]) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, [SHOAL, ...args], { env: { ...process.env, SHOAL_URL: provider.url, SHOAL_TOKEN: admin }, timeout: 120_000 }, (error, stdout, stderr) =>
        resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1, stdout, stderr }),
      );
    });
  const instancesOf = async (service: string) => ((await get('/api/v1/instances')) as { instances: Array<{ id: string; hostId: string; service: string; state: string; driver: string }> }).instances.filter((i) => i.service === service);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'aw-live-'));
    await cp(await echoStoreDir(), join(dir, 'store'), { recursive: true });
    store = await startStore({ dataDir: join(dir, 'store') });
    const client = createRegistryClient({ baseUrl: store.url });
    await buildAdventureWorks(client);
    await buildAdventureWorksLive(client);
    provider = await startProvider({
      listen: { host: '127.0.0.1', port: 0 },
      database: join(dir, 'p.db'),
      storeUrl: store.url,
      joinToken: 'join-token-for-tests',
      tuning: { reportIntervalMs: 200, suspectAfterMs: 2000, deadAfterMs: 5000, scaleIntervalMs: 200, syncIntervalMs: 500 },
    });
    for (const name of ['a', 'b']) {
      const h = await startHost({ dataDir: join(dir, name), listen: { host: '127.0.0.1', port: 0 }, token: TOKEN, capacity: { memoryMb: 4096, cpuMillis: 8000, instances: 16 }, driver: 'runc', drivers: ['runc', 'wasm'] });
      hosts.push(h);
      await provider.registerHost({ controlUrl: h.controlUrl, token: TOKEN });
    }
    admin = (await createApiToken(provider.registry, { role: 'admin' })).secret;
    const applied = await applyFarm(FARM, { url: provider.url, token: admin });
    assert.deepEqual([...applied.services].sort(), [ENTRY, PAYMENT, PROCESSING]);
    await until('three instances ready', () => [ENTRY, PAYMENT, PROCESSING].every((s) => provider.table.endpoints(s).length === 1), 90_000);
  });

  after(async () => {
    await provider?.close();
    for (const h of hosts) await h.close({ stopInstances: true });
    await store?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('Payment runs as a wasm component; after a crash the snapshot brings it back and its count continues', async () => {
    const [payment] = await instancesOf(PAYMENT);
    assert.ok(payment);
    assert.equal(payment.driver, 'wasm');
    assert.equal((await instancesOf(ENTRY))[0]?.driver, 'runc');
    for (let i = 1; i <= 4; i++) {
      const r = await post('/s/order-entry/SubmitOrder', order(i));
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.status, 'accepted');
    }
    const probe = { orderId: 'probe', card: '4111111111111111', amount: 1 };
    const counted = await post('/x/adventure-works-live/payment/Authorize', probe);
    assert.equal(counted.status, 200, counted.text);
    assert.equal(counted.json.authorizations, 5, counted.text);
    // The farm snapshots Payment every 10 s: wait for one taken after the fifth authorization.
    // A state's createdAt is when its record was written, after the capture: one capture may
    // have begun before the authorizations (CI saw a restored count of 3). Snapshots start
    // 10 s apart and take far less, so the second recorded after `since` began after it.
    const since = Date.now();
    await until(
      'a snapshot begun after the last authorization',
      async () => ((await get(`/api/v1/states?service=${PAYMENT}`)) as { states: Array<{ createdAt: number; label?: string }> }).states.filter((s) => s.createdAt > since && s.label !== undefined).length >= 2,
      45_000,
    );
    const socket = hosts.map((h) => h.agent.resolve(payment.id)?.socketPath).find((p) => p !== undefined);
    assert.ok(socket, 'the instance is on one of the hosts');
    const runner = await holderOf(socket);
    assert.match(await readFile(`/proc/${runner}/cmdline`, 'utf8'), /runner\.(ts|js)/, 'the wasm runner');
    process.kill(runner, 'SIGKILL');
    await until('the crash seen', async () => !(await instancesOf(PAYMENT)).some((i) => i.id === payment.id && i.state === 'ready'), 30_000);
    // Back from the snapshot, not from the image: the sixth authorization is numbered 6.
    let after: Awaited<ReturnType<typeof post>> | undefined;
    await until(
      'Payment answers again',
      async () => {
        const r = await post('/x/adventure-works-live/payment/Authorize', probe);
        if (r.status === 200) after = r;
        return r.status === 200;
      },
      60_000,
    );
    assert.equal(after!.json.authorizations, 6, after!.text);
    const now = (await instancesOf(PAYMENT)).filter((i) => i.state === 'ready');
    assert.equal(now.length, 1, JSON.stringify(now));
    assert.notEqual(now[0]?.id, payment.id, 'a new instance');
    const events = (await get(`/api/v1/events?kind=farm-crash-rule`)) as { events: Array<{ service: string }> };
    assert.ok(events.events.some((e) => e.service === PAYMENT), JSON.stringify(events));
  });

  it('shoal migrate moves OrderProcessing to the other host under load: nothing lost, nothing twice, its record moved', async () => {
    const [before] = await instancesOf(PROCESSING);
    assert.ok(before);
    const N = 40;
    const replies: Array<{ status: number; text: string }> = [];
    let next = 100;
    const worker = async () => {
      while (next < 100 + N) {
        const i = next++;
        const r = await post('/s/order-entry/SubmitOrder', order(i));
        replies.push({ status: r.status, text: r.text });
        await new Promise((res) => setTimeout(res, 10));
      }
    };
    const flowing = Promise.all(Array.from({ length: 4 }, worker));
    await until('orders flowing', () => replies.length >= 8, 60_000);
    const moved = await shoal('migrate', before.id, '--json');
    assert.equal(moved.code, 0, moved.stderr);
    const result = JSON.parse(moved.stdout) as { from: { host: string }; to: { instance: string; host: string } };
    assert.notEqual(result.to.host, result.from.host);
    await flowing;
    assert.equal(replies.length, N);
    assert.deepEqual(replies.filter((r) => r.status !== 200), [], 'every order answered');
    const rec = await post('/x/adventure-works-live/processing/Processed', {});
    assert.equal(rec.status, 200, rec.text);
    const orders = rec.json.orders as Record<string, number>;
    // The four orders of the first test were processed before the move: the record came along.
    for (const i of [1, 2, 3, 4]) assert.equal(orders[`o-${i}`], 1, `o-${i} in the moved record`);
    for (let i = 100; i < 100 + N; i++) assert.equal(orders[`o-${i}`], 1, `o-${i} processed exactly once`);
    assert.equal(rec.json.duplicates, 0);
    const after = await instancesOf(PROCESSING);
    assert.deepEqual(after.map((i) => i.id), [result.to.instance]);
    assert.notEqual(after[0]?.hostId, before.hostId);
  });
});
