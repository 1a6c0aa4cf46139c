// The provider with real hosts (runc, overlayfs) and a real store: a cold burst gets one
// deployment, a service scales to zero and back, a crashed instance leaves routing at once
// and is replaced, and a dead host's instances move to the other hosts.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHost, type Host } from '../../src/host/index.ts';
import type { RunningStore } from '../../src/image/index.ts';
import { startProvider, type Provider } from '../../src/provider/index.ts';
import { createApiToken } from '../../src/provider/auth/index.ts';
import { skipUnless } from '../host/fixtures/requirements.ts';
import { startEchoStore } from '../provider/fixtures/echo-store.ts';
import { until } from '../fixtures/until.ts';

const skip = skipUnless(['root', 'runc']);

const TOKEN = 'host-token-for-tests';

function echoService(name: string, extra: Record<string, unknown> = {}) {
  return {
    name,
    version: '1',
    image: 'echo:1',
    operations: {
      Echo: { input: { type: 'object', properties: { message: { type: 'string' } }, required: ['message'] }, output: { type: 'object' }, idempotent: true },
      Crash: { input: { type: 'object', properties: { code: { type: 'integer' } }, required: ['code'] }, output: { type: 'object' } },
    },
    resources: { memoryMb: 64, cpuMillis: 200, pids: 32 },
    ...extra,
  };
}

describe('provider with runc hosts', { skip }, () => {
  let store: RunningStore;
  let dir: string;
  const hosts: Host[] = [];
  const providers: Provider[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sp-'));
    store = await startEchoStore();
    for (let i = 0; i < 3; i++) {
      hosts.push(
        await startHost({
          dataDir: join(dir, `h${i}`),
          listen: { host: '127.0.0.1', port: 0 },
          token: TOKEN,
          capacity: { memoryMb: 2048, cpuMillis: 4000, instances: 16 },
          driver: 'runc',
        }),
      );
    }
  });

  after(async () => {
    await Promise.all(providers.map((p) => p.close()));
    await Promise.all(hosts.map((h) => h.close({ stopInstances: true })));
    await store?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const tokens = new Map<Provider, string>();
  async function provider(hostCount: number): Promise<Provider> {
    const p = await startProvider({
      listen: { host: '127.0.0.1', port: 0 },
      database: join(dir, `p${providers.length}.db`),
      storeUrl: store.url,
      joinToken: 'join-token-for-tests',
      tuning: { reportIntervalMs: 200, suspectAfterMs: 600, deadAfterMs: 1200, scaleIntervalMs: 200, syncIntervalMs: 500 },
    });
    providers.push(p);
    tokens.set(p, (await createApiToken(p.registry, { role: 'invoke' })).secret);
    for (const h of hosts.slice(0, hostCount)) await p.registerHost({ controlUrl: h.controlUrl, token: TOKEN });
    return p;
  }

  const send = (p: Provider, service: string, op: string, body: unknown) =>
    fetch(`${p.url}/s/${service}/${op}`, { method: 'POST', headers: { authorization: `Bearer ${tokens.get(p)}`, 'content-type': 'application/json' }, body: JSON.stringify(body) }).then(async (r) => ({ status: r.status, body: (await r.json()) as any, instance: r.headers.get('x-shoal-instance') }));

  it('100 concurrent first messages to a cold service: 100 correct replies and exactly one deployment', async () => {
    const p = await provider(1);
    await p.registerService(echoService('burst', { scaling: { targetConcurrency: 1000 } }));
    const replies = await Promise.all(Array.from({ length: 100 }, (_, i) => send(p, 'burst', 'Echo', { message: `m${i}` })));
    replies.forEach((r, i) => {
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.deepEqual(r.body, { message: `m${i}` });
    });
    const records = await p.registry.listDeployments({ service: 'burst' });
    assert.deepEqual(records.map((d) => d.state), ['ready']);
    assert.equal(hosts[0]!.agent.list().filter((i) => i.service.name === 'burst').length, 1);
    assert.equal(new Set(replies.map((r) => r.instance)).size, 1);
  });

  it('scales to zero after the idle timeout and back on the next message', async () => {
    const p = await provider(1);
    await p.registerService(echoService('idle', { scaling: { idleTimeoutMs: 800 } }));
    const first = await send(p, 'idle', 'Echo', { message: 'a' });
    assert.equal(first.status, 200);
    await until('scaled to zero', () => hosts[0]!.agent.list().every((i) => i.service.name !== 'idle'), 20_000);
    assert.deepEqual((await p.registry.listDeployments({ service: 'idle' })).map((d) => d.state), ['stopped']);
    const again = await send(p, 'idle', 'Echo', { message: 'b' });
    assert.equal(again.status, 200);
    assert.deepEqual(again.body, { message: 'b' });
    assert.notEqual(again.instance, first.instance);
    assert.deepEqual((await p.registry.listDeployments({ service: 'idle' })).map((d) => d.state), ['stopped', 'ready']);
  });

  it('a crashed instance leaves routing at once (no message routed to it after its event) and is replaced up to min', async () => {
    const p = await provider(2);
    await p.registerService(echoService('heal', { scaling: { min: 2, idleTimeoutMs: 600_000 } }));
    await until('min 2 ready', () => p.table.endpoints('heal').length === 2, 20_000);
    let crashed: string | undefined;
    let removedAt: number | undefined;
    const routedToDead: number[] = [];
    const reasons: string[] = [];
    p.events.on('removed', (ep, reason) => {
      if (ep.id !== crashed || removedAt !== undefined) return;
      // The host's crash event, or before it the host saying the instance's socket is gone.
      removedAt = performance.now();
      reasons.push(reason);
    });
    p.events.on('routed', (ep) => {
      if (removedAt !== undefined && ep.id === crashed) routedToDead.push(performance.now());
    });
    let stop = false;
    const statuses: number[] = [];
    const traffic = (async () => {
      while (!stop) statuses.push((await send(p, 'heal', 'Echo', { message: 'x' })).status);
    })();
    const crash = await send(p, 'heal', 'Crash', { code: 3 });
    assert.equal(crash.status, 200);
    crashed = crash.instance ?? undefined;
    assert.ok(crashed);
    await until('the crash event took it out of routing', () => removedAt !== undefined, 20_000);
    await until('replaced', () => p.table.endpoints('heal').length === 2 && p.table.endpoints('heal').every((e) => e.id !== crashed), 60_000);
    // However loaded the machine, let some traffic reach the replaced pair before stopping.
    const before = statuses.length;
    await until('traffic after the replacement', () => statuses.length > before + 10, 60_000);
    stop = true;
    await traffic;
    assert.ok(['crashed', 'exited', 'gone'].includes(reasons[0]!), reasons.join());
    assert.deepEqual(routedToDead, [], 'no message routed to the crashed instance after it left routing');
    assert.ok(statuses.length > 10);
    assert.ok(statuses.every((s) => s === 200), `Echo is idempotent: every message answered (${[...new Set(statuses)].join(',')})`);
    const records = await p.registry.listDeployments({ service: 'heal' });
    const dead = records.find((d) => d.instanceId === crashed);
    assert.equal(dead?.state, 'failed');
    assert.match(dead?.error ?? '', /crashed|exited/);
    assert.equal(records.filter((d) => d.state === 'ready').length, 2);
  });

  it("a dead host's instances are redeployed on the other hosts", async () => {
    const p = await provider(3);
    const [h0, h1, h2] = hosts as [Host, Host, Host];
    await p.registerService(echoService('move', { scaling: { min: 1, idleTimeoutMs: 600_000 }, placement: { policy: 'host-list', hosts: [h2.hostId, h1.hostId, h0.hostId] } }));
    // The first deployment on a fresh host pulls the whole image: give a loaded machine time.
    await until('deployed on the first host of the list', () => p.table.endpoints('move').some((e) => e.hostId === h2.hostId), 60_000);
    assert.equal((await send(p, 'move', 'Echo', { message: 'before' })).status, 200);
    await h2.close({ stopInstances: true });
    await until('moved', () => p.table.endpoints('move').some((e) => e.hostId === h1.hostId), 60_000);
    assert.equal((await p.registry.getHost(h2.hostId))?.state, 'dead');
    const r = await send(p, 'move', 'Echo', { message: 'after' });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, { message: 'after' });
    const records = await p.registry.listDeployments({ service: 'move' });
    assert.ok(records.some((d) => d.hostId === h2.hostId && d.state === 'failed'));
    assert.ok(records.some((d) => d.hostId === h1.hostId && d.state === 'ready'));
  });
});
