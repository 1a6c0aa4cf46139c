// Hosts that hold against instances that stop answering and against faults (issue 10,
// items 5–7), with real runc hosts and a real store: an instance that closes its listener
// while its process lives is replaced; the warm pool keeps nothing of a removed or
// superseded service; an instance whose host refuses connections leaves routing and is
// not put back from its registry record, and the messages go to a new instance.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startHost, type Host } from '../../src/host/index.ts';
import type { RunningStore } from '../../src/image/index.ts';
import { auth, startProvider, type Provider } from '../../src/provider/index.ts';
import type { HostEvent } from '../../src/protocol/deployment.ts';
import { skipUnless } from '../host/fixtures/requirements.ts';
import { startEchoStore } from '../provider/fixtures/echo-store.ts';
import { until } from '../fixtures/until.ts';

const skip = skipUnless(['root', 'runc']);
const run = promisify(execFile);
const TOKEN = 'host-token-for-tests';

function echoService(name: string, extra: Record<string, unknown> = {}) {
  return {
    name,
    version: '1',
    image: 'echo:1',
    operations: {
      Echo: { input: { type: 'object', properties: { message: { type: 'string' } }, required: ['message'] }, output: { type: 'object' }, idempotent: true },
      Deafen: { input: { type: 'object' }, output: { type: 'object' } },
    },
    resources: { memoryMb: 64, cpuMillis: 200, pids: 32 },
    ...extra,
  };
}

describe('liveness and faults with runc hosts', { skip }, () => {
  let store: RunningStore;
  let dir: string;
  const hosts: Host[] = [];
  const providers: Provider[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sl-'));
    store = await startEchoStore();
  });

  after(async () => {
    await Promise.all(providers.map((p) => p.close()));
    await Promise.all(hosts.map((h) => h.close({ stopInstances: true })));
    await store?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function host(name: string, options: Partial<Parameters<typeof startHost>[0]> = {}): Promise<Host> {
    const h = await startHost({
      dataDir: join(dir, name),
      listen: { host: '127.0.0.1', port: 0 },
      token: TOKEN,
      capacity: { memoryMb: 2048, cpuMillis: 4000, instances: 16 },
      driver: 'runc',
      ...options,
    });
    hosts.push(h);
    return h;
  }

  async function provider(on: Host[], tuning: Record<string, number> = {}): Promise<Provider> {
    const p = await startProvider({
      listen: { host: '127.0.0.1', port: 0 },
      database: join(dir, `p${providers.length}.db`),
      storeUrl: store.url,
      joinToken: 'join-token-for-tests',
      tuning: { reportIntervalMs: 200, suspectAfterMs: 5000, deadAfterMs: 10_000, scaleIntervalMs: 200, syncIntervalMs: 300, ...tuning },
    });
    providers.push(p);
    adminTokens.set(p, (await auth.createApiToken(p.registry, { role: 'admin', note: 'liveness test' })).secret);
    for (const h of on) await p.registerHost({ controlUrl: h.controlUrl, token: TOKEN });
    return p;
  }
  const adminTokens = new Map<Provider, string>();
  const adminAuth = (p: Provider) => ({ authorization: `Bearer ${adminTokens.get(p)}` });

  const send = (p: Provider, service: string, op: string, body: unknown) =>
    fetch(`${p.url}/s/${service}/${op}`, { method: 'POST', headers: { ...adminAuth(p), 'content-type': 'application/json' }, body: JSON.stringify(body) }).then(async (r) => ({ status: r.status, body: (await r.json()) as any, instance: r.headers.get('x-shoal-instance') }));

  it('an instance that closes its listener while its process lives is marked unresponsive, replaced, and the messages after it succeed', async () => {
    // Only the forwarder's failure triggers the probe here (no periodic probe), so the test shows that path.
    const h = await host('deaf', { liveness: { periodMs: 0 } });
    const p = await provider([h]);
    const events: HostEvent[] = [];
    h.events.subscribe((e) => events.push(e));
    await p.registerService(echoService('deaf'));
    const first = await send(p, 'deaf', 'Echo', { message: 'before' });
    assert.equal(first.status, 200);
    const deaf = first.instance!;
    assert.equal((await send(p, 'deaf', 'Deafen', {})).status, 200);
    await new Promise((r) => setTimeout(r, 400)); // it has closed its listener (and kept-alive connections)
    const after: Array<{ status: number; instance: string | null }> = [];
    for (let i = 0; i < 10; i++) after.push(await send(p, 'deaf', 'Echo', { message: `after ${i}` }));
    assert.deepEqual(after.map((r) => r.status), Array(10).fill(200), JSON.stringify(after));
    assert.ok(after.every((r) => r.instance !== deaf), 'every message after it went to the replacement');
    assert.ok(events.some((e) => e.type === 'unresponsive' && e.instance === deaf), 'the host said it is unresponsive');
    assert.equal((await h.agent.get(deaf, { stats: false })).state, 'unresponsive');
    const record = (await p.registry.listDeployments({ service: 'deaf' })).find((d) => d.instanceId === deaf);
    assert.equal(record?.state, 'failed');
    assert.match(record?.error ?? '', /unresponsive/);
    // Not put back by the registry sync or the reconciler.
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(p.table.endpoint(deaf), undefined);
    assert.equal((await send(p, 'deaf', 'Echo', { message: 'later' })).status, 200);
  });

  it('the warm pool keeps no container of a superseded or removed service (runc list, the host report)', async () => {
    const h = await host('warm');
    const p = await provider([h]);
    const runcList = async () => {
      const { stdout } = await run('runc', ['--root', join(dir, 'warm', 'runc'), 'list', '--format', 'json']);
      return (JSON.parse(stdout || 'null') ?? []) as Array<{ id: string; status: string }>;
    };
    const warmOf = async (version: string) => (await h.report()).warm?.filter((w) => w.service.name === 'pooled' && w.service.version === version) ?? [];
    await p.registerService(echoService('pooled'));
    assert.equal((await send(p, 'pooled', 'Echo', { message: 'v1' })).status, 200);
    await until('a version 1 container created ahead', async () => (await warmOf('1')).length === 1, 30_000, 100);
    const v1 = (await warmOf('1'))[0]!.instance;
    assert.ok((await runcList()).some((c) => c.id === v1 && c.status === 'created'));

    await p.registerService({ ...echoService('pooled'), version: '2' });
    await until('the version 1 container is gone', async () => (await warmOf('1')).length === 0 && !(await runcList()).some((c) => c.id === v1), 10_000, 100);
    const r2 = await send(p, 'pooled', 'Echo', { message: 'v2' });
    assert.equal(r2.status, 200);
    await until('a version 2 container created ahead', async () => (await warmOf('2')).length === 1, 30_000, 100);
    const v2 = (await warmOf('2'))[0]!.instance;

    const res = await fetch(`${p.url}/api/v1/services/pooled`, { method: 'DELETE', headers: adminAuth(p) });
    assert.ok(res.status < 300, `removing the service: ${res.status} ${await res.text()}`);
    // A template pool container holds no service's layer or settings: it may stay.
    const services = async () => (await h.report()).warm?.filter((w) => w.service.name !== 'template') ?? [];
    await until('nothing of the removed service is left', async () => (await services()).length === 0 && !(await runcList()).some((c) => c.id === v2 || c.id.startsWith('pooled-')), 10_000, 100);
  });

  it('a host that refuses connections: its instance leaves routing at once and is not put back from its record, every idempotent message is answered by a new instance on another host before the host is declared dead; restarted, the host keeps its addresses', async () => {
    const hs = [await host('d0'), await host('d1'), await host('d2')];
    const [h0, h1] = hs as [Host, Host, Host];
    let h2 = hs[2]!;
    // Declared dead only after minutes: what happens here must not wait for that.
    const p = await provider(hs, { suspectAfterMs: 120_000, deadAfterMs: 240_000 });
    await p.registerService(echoService('moving', { scaling: { min: 1, idleTimeoutMs: 600_000 }, placement: { policy: 'host-list', hosts: [h2.hostId, h1.hostId, h0.hostId] } }));
    await until('deployed on the first host of the list', () => p.table.endpoints('moving').some((e) => e.hostId === h2.hostId), 30_000);
    const doomed = p.table.endpoints('moving')[0]!.id;
    assert.equal((await send(p, 'moving', 'Echo', { message: 'before' })).status, 200);
    const readded: string[] = [];
    let gone = false;
    p.events.on('added', (ep) => {
      if (gone && ep.id === doomed) readded.push(ep.id);
    });
    let stop = false;
    const outcomes: Array<{ status: number; instance: string | null; body?: unknown }> = [];
    const traffic = (async () => {
      while (!stop) {
        const r = await send(p, 'moving', 'Echo', { message: 'x' });
        outcomes.push({ status: r.status, instance: r.instance, ...(r.status === 200 ? {} : { body: r.body }) });
      }
    })();
    await new Promise((r) => setTimeout(r, 200));
    // The host process goes (its ports refuse connections); its container lives on.
    const { controlUrl, dataUrl } = h2;
    await h2.close({ stopInstances: false });
    gone = true;
    try {
      await until('a replacement on another host serves', () => p.table.endpoints('moving').some((e) => e.hostId !== h2.hostId), 60_000);
      const replacedAt = outcomes.length;
      await until('messages through the replacement', () => outcomes.length > replacedAt + 20, 30_000);
      await new Promise((r) => setTimeout(r, 1000)); // registry syncs (every 300 ms) would put it back by now
      stop = true;
      await traffic;
    assert.notEqual((await p.registry.getHost(h2.hostId))?.state, 'dead', 'all this before the host was declared dead');
    const bad = outcomes.filter((o) => o.status !== 200);
    assert.deepEqual(bad, [], `no message failed (${outcomes.length} sent; the failed: ${JSON.stringify(bad.slice(0, 5))})`);
    assert.deepEqual(readded, [], 'the instance of the refusing host was not put back into routing');
    assert.equal(p.table.endpoint(doomed), undefined);
    } finally {
      stop = true;
      // Restarted on its data dir: it re-adopts its instance (and cleans up after the test).
      h2 = await host('d2');
    }
    // It listens where it did.
    assert.equal(h2.controlUrl, controlUrl);
    assert.equal(h2.dataUrl, dataUrl);
    assert.ok(h2.agent.list().some((i) => i.id === doomed), 're-adopted');
  });
});
