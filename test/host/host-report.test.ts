import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hostReport, metricsSnapshot, type HostFacts } from '../../src/host/host-report.ts';
import { createAdmission } from '../../src/host/admission.ts';
import { createFingerprintCache } from '../../src/host/host-drivers.ts';
import type { CachedEntry } from '../../src/host/layer-cache.ts';
import { fakeDriver } from './fixtures/fakes.ts';

function facts(): HostFacts {
  const admission = createAdmission({ memoryMb: 1000, cpuMillis: 2000, instances: 10 });
  assert.ok(admission.reserve('a-1', { memoryMb: 100, cpuMillis: 50 }).ok);
  const entries: CachedEntry[] = [
    { key: 'layer:1', kind: 'layer', digest: 'sha256:1', size: 10, lastUsed: 0, refs: 1 },
    { key: 'blob:2', kind: 'blob', digest: 'sha256:2', size: 20, lastUsed: 0, refs: 0 },
    { key: 'flat:3', kind: 'flat', digest: 'sha256:3', size: 30, lastUsed: 0, refs: 2 },
  ];
  return {
    hostId: 'host-1',
    urls: () => ({ controlUrl: 'http://h:1', dataUrl: 'http://h:2' }),
    admission,
    agent: { liveCount: () => 1, warm: () => [{ instance: 'echo-1', service: { name: 'echo', version: '2' } }] },
    load: () => ({ inFlight: 3, requestsTotal: 99 }),
    layerCache: { entries: () => entries, totalBytes: () => 60, budgetBytes: 1000 },
    drivers: { runc: fakeDriver('runc'), process: fakeDriver('process', 'none') },
    defaultDriver: 'runc',
    fingerprints: createFingerprintCache(),
  };
}

test('the report: capacity and what is reserved and free, load, non-flat layers with use, drivers with the default marked', async () => {
  const r = await hostReport(facts());
  assert.equal(r.hostId, 'host-1');
  assert.deepEqual([r.controlUrl, r.dataUrl], ['http://h:1', 'http://h:2']);
  assert.deepEqual(r.capacity, { memoryMb: 1000, cpuMillis: 2000, instances: 10 });
  assert.deepEqual(r.reserved, { memoryMb: 100, cpuMillis: 50, instances: 1 });
  assert.deepEqual(r.free, { memoryMb: 900, cpuMillis: 1950, instances: 9 });
  assert.deepEqual(r.load, { instances: 1, inFlight: 3, requestsTotal: 99 });
  assert.deepEqual(r.warm, [{ instance: 'echo-1', service: { name: 'echo', version: '2' } }]);
  assert.deepEqual(r.layers, [
    { digest: 'sha256:1', size: 10, inUse: true },
    { digest: 'sha256:2', size: 20, inUse: false },
  ]);
  assert.deepEqual(r.layerCache, { bytes: 60, budgetBytes: 1000 });
  assert.deepEqual(r.drivers.map((d) => [d.name, d.default, (d.capabilities as any).isolation, (d.fingerprint as any).healthy]), [
    ['runc', true, 'container', true],
    ['process', false, 'none', true],
  ]);
});

test('the metrics snapshot reads the same facts', () => {
  assert.deepEqual(metricsSnapshot(facts()), {
    instances: 1,
    reservedMemoryMb: 100,
    reservedCpuMillis: 50,
    capacityMemoryMb: 1000,
    capacityCpuMillis: 2000,
    capacityInstances: 10,
    layerCacheBytes: 60,
    layerCacheEntries: 3,
    inFlight: 3,
  });
});
