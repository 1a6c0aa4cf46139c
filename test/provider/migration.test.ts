// The provider's move of an instance alone: a real routing table, placement and registry
// (SQLite in a temp dir), host client doubles that record what the provider asks. Which
// way it moves (live when both hosts' drivers migrate live, else stop-and-copy), the
// fallback when a live move is given up, and a target that fails after the move.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInFlightTracker } from '../../src/provider/balancer/index.ts';
import { createRoutingTable, type RouteEndpoint } from '../../src/provider/routing-table.ts';
import { openRegistry } from '../../src/provider/registry/index.ts';
import { migrateInstance, type MigrationDeps } from '../../src/provider/migration.ts';
import type { HostPool, PoolHost } from '../../src/provider/host-pool.ts';
import { ShoalError, type DriverCapabilities, type HostReport } from '../../src/protocol/index.ts';

const VM: DriverCapabilities = { isolation: 'vm', canPause: true, canSnapshot: true, canMigrate: true, canClone: false, enforcesLimits: true, liveMigrates: true };
const WASM: DriverCapabilities = { isolation: 'wasm', canPause: false, canSnapshot: true, canMigrate: true, canClone: true, enforcesLimits: false };
const offer = { address: '127.0.0.1:9', key: 'd'.repeat(64), annotations: {} };

interface Behaviour {
  /** The source's answer to migrateLive. */
  send?: () => Promise<unknown>;
  /** The target's answer to accept. */
  accept?: () => Promise<unknown>;
}

async function setup(t: { after(fn: () => Promise<void> | void): void }, driver: 'vm' | 'wasm', b: Behaviour = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-migration-'));
  const registry = await openRegistry({ sqlitePath: join(dir, 'r.db') });
  t.after(async () => {
    await registry.close();
    await rm(dir, { recursive: true, force: true });
  });
  const calls: string[] = [];
  const deployed = (id: string) => ({ endpoint: { instance: id, url: 'http://127.0.0.1:2/i', token: 't', expiresAt: Date.now() + 60_000 }, instance: { id } });
  const client = (host: string) => ({
    receive: async () => (calls.push(`${host} receive`), { instance: 'new-1', offer }),
    migrateLive: async (id: string) => (calls.push(`${host} migrateLive ${id}`), b.send ? b.send() : { id, totalMs: 9, downtimeMs: 3, heldMs: 4, bytes: 5 }),
    accept: async (id: string) => (calls.push(`${host} accept ${id}`), b.accept ? b.accept() : deployed(id)),
    abortIncoming: async (id: string) => void calls.push(`${host} abortIncoming ${id}`),
    resumeMigrated: async (id: string) => void calls.push(`${host} resumeMigrated ${id}`),
    snapshot: async (id: string) => (calls.push(`${host} snapshot ${id}`), { digest: 'sha256:' + 'e'.repeat(64), size: 1 }),
    deploy: async () => (calls.push(`${host} deploy`), deployed('copy-1')),
    release: async (id: string) => void calls.push(`${host} release ${id}`),
    remove: async (id: string) => (calls.push(`${host} remove ${id}`), true),
  });
  const report = { capacity: { memoryMb: 4096, cpuMillis: 4000, instances: 10 }, free: { memoryMb: 4096, cpuMillis: 4000, instances: 10 }, load: { instances: 0, inFlight: 0 }, layers: [], drivers: [{ name: driver, default: true, capabilities: driver === 'vm' ? VM : WASM, fingerprint: { healthy: true, detail: '', attributes: {} } }] } as unknown as HostReport;
  const hosts = ['h1', 'h2'].map((id) => ({ id, state: 'alive', labels: {}, report, client: client(id) }) as unknown as PoolHost);
  const pool = { get: (id: string) => hosts.find((h) => h.id === id), placeable: () => hosts } as unknown as HostPool;
  const table = createRoutingTable({ tracker: createInFlightTracker() });
  table.putService({ name: 'svc', version: '1', image: 'svc:1', driver, operations: {}, resources: { memoryMb: 64, cpuMillis: 100, pids: 8 }, placement: {} } as never);
  const d = await registry.createDeployment({ service: 'svc', version: '1', state: 'ready', hostId: 'h1', instanceId: 'old-1' });
  table.add({ id: 'old-1', service: 'svc', version: '1', deploymentId: d.id, hostId: 'h1', token: 't', expiresAt: Date.now() + 60_000 } as unknown as RouteEndpoint);
  const deps: MigrationDeps = {
    pool,
    table,
    registry,
    images: { resolve: async () => ({ repository: 'svc', manifestDigest: 'sha256:' + 'f'.repeat(64), layers: [] }) as never },
    deployer: { endpointOf: (ref: { instance: string }, _id: string, host: PoolHost) => ({ id: ref.instance, service: 'svc', version: '1', hostId: host.id, token: 't', expiresAt: Date.now() + 60_000 }) as unknown as RouteEndpoint },
    providerId: 'p1',
    storeUrl: () => 'http://127.0.0.1:1',
    readinessTimeoutMs: 1000,
    log: { info() {}, warn() {}, error() {} } as never,
  };
  return { deps, calls, table };
}

test('both hosts migrate live: offer from the target, sent by the source, accepted, routed, the source removed', async (t) => {
  const { deps, calls, table } = await setup(t, 'vm');
  const r = await migrateInstance(deps, 'old-1');
  assert.equal(r.mode, 'live');
  assert.deepEqual(r.to, { instance: 'new-1', host: 'h2' });
  assert.equal(r.live?.downtimeMs, 3);
  assert.deepEqual(calls, ['h2 receive', 'h1 migrateLive old-1', 'h2 accept new-1', 'h1 remove old-1']);
  assert.deepEqual(table.endpoints('svc').map((e) => e.id), ['new-1']);
});

test('a driver without liveMigrates moves by stop-and-copy, as before', async (t) => {
  const { deps, calls } = await setup(t, 'wasm');
  const r = await migrateInstance(deps, 'old-1');
  assert.equal(r.mode, 'stop-and-copy');
  assert.match(r.state ?? '', /^sha256:e+$/);
  assert.deepEqual(calls, ['h1 snapshot old-1', 'h2 deploy', 'h1 remove old-1']);
});

test('a live move given up (a message in flight at the stop) is retried by stop-and-copy; the target of the first try goes', async (t) => {
  const { deps, calls } = await setup(t, 'vm', { send: async () => Promise.reject(new ShoalError('conflict', 'given up', { detail: { reason: 'in-flight' } })) });
  const r = await migrateInstance(deps, 'old-1');
  assert.equal(r.mode, 'stop-and-copy');
  assert.deepEqual(calls, ['h2 receive', 'h1 migrateLive old-1', 'h2 abortIncoming new-1', 'h1 snapshot old-1', 'h2 deploy', 'h1 remove old-1']);
});

test('a failed stream fails the move: the target goes, the source runs on, the route stays', async (t) => {
  const { deps, calls, table } = await setup(t, 'vm', { send: async () => Promise.reject(new ShoalError('unavailable', 'the live migration failed')) });
  await assert.rejects(migrateInstance(deps, 'old-1'), /live migration failed/);
  assert.deepEqual(calls, ['h2 receive', 'h1 migrateLive old-1', 'h2 abortIncoming new-1']);
  assert.deepEqual(table.endpoints('svc').map((e) => e.id), ['old-1']);
});

test('a target that fails after the move is removed first, the source resumes from its stop, and it moves by stop-and-copy', async (t) => {
  const { deps, calls, table } = await setup(t, 'vm', { accept: async () => Promise.reject(new ShoalError('timeout', 'not ready')) });
  const r = await migrateInstance(deps, 'old-1');
  assert.equal(r.mode, 'stop-and-copy');
  assert.match(r.liveFailed ?? '', /target failed after the switch-over.*not ready/);
  assert.deepEqual(calls, ['h2 receive', 'h1 migrateLive old-1', 'h2 accept new-1', 'h2 abortIncoming new-1', 'h1 resumeMigrated old-1', 'h1 snapshot old-1', 'h2 deploy', 'h1 remove old-1']);
  assert.deepEqual(table.endpoints('svc').map((e) => e.id), ['copy-1']);
});

test('a failed target that cannot be removed for sure leaves the source stopped: no resume, no second move', async (t) => {
  const { deps, calls, table } = await setup(t, 'vm', { accept: async () => Promise.reject(new ShoalError('timeout', 'not ready')) });
  const h2 = deps.pool.get('h2')!.client as unknown as { abortIncoming: (id: string) => Promise<void> };
  h2.abortIncoming = async (id: string) => {
    calls.push(`h2 abortIncoming ${id} (fails)`);
    throw new ShoalError('unavailable', 'host unreachable');
  };
  await assert.rejects(migrateInstance(deps, 'old-1'), /not ready/);
  assert.deepEqual(calls, ['h2 receive', 'h1 migrateLive old-1', 'h2 accept new-1', 'h2 abortIncoming new-1 (fails)']);
  assert.deepEqual(table.endpoints('svc').map((e) => e.id), ['old-1']);
});
