// The host pool: registration checks the host's token, reports are polled into the
// registry, silent hosts go suspect then dead (and come back alive when they answer),
// and each host's event stream reaches the provider, reconnecting after a drop.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHostPool } from '../../src/provider/host-pool.ts';
import { openRegistry } from '../../src/provider/registry/index.ts';
import type { HostEvent } from '../../src/protocol/deployment.ts';
import { startFakeHost } from './fixtures/fake-host.ts';
import { until } from './fixtures/provider.ts';

const quiet = { info() {}, warn() {}, error() {} };

async function setup(t: { after(fn: () => Promise<void>): void }) {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-pool-'));
  const registry = await openRegistry({ url: join(dir, 'r.db') });
  const states: Array<[string, string, string, boolean]> = [];
  const events: HostEvent[] = [];
  const pool = createHostPool({
    registry,
    log: quiet,
    reportIntervalMs: 50,
    suspectAfterMs: 150,
    deadAfterMs: 400,
    onState: (h, from, to, here) => states.push([h.id, from, to, here]),
    onEvent: (_h, e) => events.push(e),
  });
  t.after(async () => {
    await pool.close();
    await registry.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { registry, pool, states, events };
}

test('registration: the report names the host; its token is kept for a restarted provider', async (t) => {
  const { registry, pool } = await setup(t);
  const host = await startFakeHost({ token: 'tok-12345678' });
  t.after(() => host.close());
  const h = await pool.register({ controlUrl: `${host.controlUrl}/some/path`, token: 'tok-12345678', labels: { zone: 'z1' } });
  assert.equal(h.id, host.id);
  assert.equal(h.dataUrl, host.dataUrl);
  assert.equal(h.report?.hostId, host.id);
  const record = await registry.getHost(host.id);
  assert.equal(record?.state, 'alive');
  assert.deepEqual(record?.labels, { zone: 'z1' });
  assert.equal(record!.controlToken, 'tok-12345678');
  await assert.rejects(pool.register({ controlUrl: host.controlUrl, token: 'wrong-token-1' }), (e: any) => e.code === 'forbidden' && e.field === 'token');
  await assert.rejects(pool.register({ controlUrl: 'ftp://x', token: 'tok-12345678' }), (e: any) => e.code === 'invalid' && e.field === 'controlUrl');
  assert.deepEqual(pool.placeable().map((p) => p.id), [host.id]);
});

test('a host that stops reporting goes suspect, then dead; answering again makes it alive', async (t) => {
  const { pool, states, registry } = await setup(t);
  const host = await startFakeHost();
  await pool.register({ controlUrl: host.controlUrl, token: host.token });
  pool.start();
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(states.length, 0, 'reporting: stays alive');
  await host.kill();
  await until('dead', () => pool.get(host.id)?.state === 'dead', 3000);
  assert.deepEqual(
    states.map(([, from, to, here]) => [from, to, here]),
    [
      ['alive', 'suspect', true],
      ['suspect', 'dead', true],
    ],
  );
  assert.equal((await registry.getHost(host.id))?.state, 'dead');
  assert.deepEqual(pool.placeable(), []);
  await host.revive();
  await until('alive again', () => pool.get(host.id)?.state === 'alive', 3000);
  assert.deepEqual(states.at(-1)?.slice(1), ['dead', 'alive', true]);
  await host.close();
});

test('instance events arrive from each host, and the stream is followed again after a drop', async (t) => {
  const { pool, events } = await setup(t);
  const host = await startFakeHost();
  t.after(() => host.close());
  await pool.register({ controlUrl: host.controlUrl, token: host.token });
  await until('following', () => pool.get(host.id)?.following === true);
  const deploy = () =>
    fetch(`${host.controlUrl}/v1/instances`, {
      method: 'POST',
      headers: { authorization: `Bearer ${host.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ service: { name: 'svc', version: '1' }, image: 'x:1', store: 'http://127.0.0.1:9', resources: { memoryMb: 64, cpuMillis: 100, pids: 16 } }),
    }).then((r) => r.json() as Promise<{ instance: { id: string } }>);
  const first = await deploy();
  host.crash(first.instance.id);
  await until('crash event', () => events.some((e) => e.type === 'crashed' && e.instance === first.instance.id));
  // Drop the stream (the host restarts its control server); the pool reconnects.
  await host.kill();
  await until('stream lost', () => pool.get(host.id)?.following === false);
  await host.revive();
  await until('following again', () => pool.get(host.id)?.following === true, 5000);
  const second = await deploy();
  host.crash(second.instance.id, 'oom');
  await until('oom event after reconnect', () => events.some((e) => e.type === 'oom' && e.instance === second.instance.id), 5000);
});

test('a restarted provider loads its hosts from the registry', async (t) => {
  const { registry, pool } = await setup(t);
  const host = await startFakeHost();
  t.after(() => host.close());
  await pool.register({ controlUrl: host.controlUrl, token: host.token });
  const again = createHostPool({ registry, log: quiet, reportIntervalMs: 50 });
  t.after(() => again.close());
  await again.load();
  assert.deepEqual(again.list().map((h) => h.id), [host.id]);
  await again.tick();
  assert.equal(again.get(host.id)?.report?.hostId, host.id);
  assert.equal((await again.get(host.id)!.client.list()).length, 0);
});
