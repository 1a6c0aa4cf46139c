// The provider's live-state operations alone: a real routing table and registry (SQLite in
// a temp dir), a host client double that records what the provider asks of the host.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInFlightTracker } from '../../src/provider/balancer/index.ts';
import { createRoutingTable, type RouteEndpoint } from '../../src/provider/routing-table.ts';
import { openRegistry } from '../../src/provider/registry/index.ts';
import { pauseInstance, resumeInstance, snapshotInstance, forkInstance, type LiveOpsDeps } from '../../src/provider/live-ops.ts';
import type { HostPool, PoolHost } from '../../src/provider/host-pool.ts';
import { isShoalError, type DriverCapabilities } from '../../src/protocol/index.ts';

const CAPS: Record<string, DriverCapabilities> = {
  runc: { isolation: 'namespaces', canPause: true, canSnapshot: false, canMigrate: false, canClone: false, enforcesLimits: true },
  isolate: { isolation: 'isolate', canPause: false, canSnapshot: false, canMigrate: false, canClone: false, enforcesLimits: true },
};

async function setup(t: { after(fn: () => Promise<void> | void): void }, driver: keyof typeof CAPS) {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-live-ops-'));
  const registry = await openRegistry({ sqlitePath: join(dir, 'r.db') });
  t.after(async () => {
    await registry.close();
    await rm(dir, { recursive: true, force: true });
  });
  const calls: string[] = [];
  const table = createRoutingTable({ tracker: createInFlightTracker() });
  const client = {
    get: async (id: string) => ({ id, driver }),
    pause: async (id: string) => void calls.push(`pause ${id}`),
    resume: async (id: string) => void calls.push(`resume ${id}`),
    snapshot: async (id: string) => (calls.push(`snapshot ${id}`), { digest: 'sha256:x', size: 1 }),
    fork: async (id: string) => (calls.push(`fork ${id}`), {}),
  };
  const host = { id: 'h1', report: { drivers: [{ name: driver, default: true, capabilities: CAPS[driver] }] }, client } as unknown as PoolHost;
  const pool = { get: (id: string) => (id === 'h1' ? host : undefined) } as unknown as HostPool;
  const d = await registry.createDeployment({ service: 'svc', version: '1', state: 'ready', hostId: 'h1', instanceId: 'i1' });
  table.add({ id: 'i1', service: 'svc', version: '1', deploymentId: d.id, hostId: 'h1', token: 't', expiresAt: Date.now() + 60_000 } as unknown as RouteEndpoint);
  const deps = { pool, table, registry, log: { info() {}, warn() {}, error() {} } } as unknown as LiveOpsDeps;
  return { deps, calls, table, registry, deploymentId: d.id };
}

const refused = (code: string, pattern: RegExp) => (e: unknown) => isShoalError(e) && e.code === code && e.field === 'id' && pattern.test(e.message);

test('pause takes the instance out of routing before the host freezes it; resume brings it back; both recorded', async (t) => {
  const { deps, calls, table, registry, deploymentId } = await setup(t, 'runc');
  await pauseInstance(deps, 'i1');
  assert.deepEqual(calls, ['pause i1']);
  assert.deepEqual(table.endpoints('svc'), [], 'no message goes to a frozen instance');
  assert.equal(table.paused('svc')[0]?.id, 'i1');
  assert.ok((await registry.getDeployment(deploymentId))?.pausedAt);
  await assert.rejects(pauseInstance(deps, 'i1'), refused('conflict', /paused already/));
  await assert.rejects(snapshotInstance(deps, 'i1'), refused('conflict', /resume it first/));
  const ep = await resumeInstance(deps, 'i1');
  assert.equal(ep.id, 'i1');
  assert.equal(table.endpoints('svc')[0]?.id, 'i1');
  assert.equal((await registry.getDeployment(deploymentId))?.pausedAt, undefined);
  await assert.rejects(resumeInstance(deps, 'i1'), refused('conflict', /not paused/));
  await new Promise((r) => setTimeout(r, 20)); // events are written in the background
  assert.deepEqual((await registry.listEvents({ service: 'svc' })).map((e) => e.kind).slice(-2), ['paused', 'resumed']);
});

test("a driver without the capability is refused before the host is asked, naming the driver and what it cannot do", async (t) => {
  const { deps, calls, table } = await setup(t, 'isolate');
  await assert.rejects(pauseInstance(deps, 'i1'), refused('unsupported', /driver isolate, which cannot pause/));
  await assert.rejects(snapshotInstance(deps, 'i1'), refused('unsupported', /driver isolate, which cannot snapshot/));
  await assert.rejects(forkInstance(deps, 'i1'), refused('unsupported', /driver isolate, which cannot fork/));
  assert.deepEqual(calls, [], 'the host was asked nothing');
  assert.equal(table.endpoints('svc').length, 1, 'still routed');
  await assert.rejects(pauseInstance(deps, 'nope'), refused('not-found', /no instance "nope"/));
});
