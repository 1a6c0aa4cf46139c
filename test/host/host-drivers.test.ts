import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createFingerprintCache, openDrivers } from '../../src/host/host-drivers.ts';
import { newRecord } from '../../src/host/instances/instance-store.ts';
import type { InstanceRecord } from '../../src/host/host-state.ts';
import type { DriverName } from '../../src/host/drivers/index.ts';
import { fakeDriver, plan } from './fixtures/fakes.ts';

const stateWith = (drivers: string[]) => ({
  list: async () => ({ records: drivers.map((d, i) => ({ ...newRecord(`x-${i}`, plan(), d as DriverName, 1) }) as InstanceRecord), orphans: [] }),
});

test('the default and named drivers are offered; other built-in drivers found on disk are kept on standby', async () => {
  const made: string[] = [];
  const make = async (name: DriverName) => ((made.push(name), fakeDriver(name)));
  const a = await openDrivers({ defaultDriver: 'process', names: ['process'], state: stateWith(['runc', 'runc', 'process', 'qemu']), make });
  assert.deepEqual(Object.keys(a.drivers), ['process']);
  assert.deepEqual(Object.keys(a.standby), ['runc'], 'one standby per driver; names outside the registry are left to recovery');
  assert.deepEqual(made, ['process', 'runc']);
  const b = await openDrivers({ defaultDriver: 'runc', names: ['process'], state: stateWith(['process']), make });
  assert.deepEqual(Object.keys(b.drivers), ['runc', 'process']);
  assert.deepEqual(Object.keys(b.standby), []);
});

test('fingerprints are cached for the ttl; a failing one is unhealthy with the reason', async () => {
  let now = 0;
  const cache = createFingerprintCache({ ttlMs: 100, now: () => now });
  const d = fakeDriver('runc');
  let calls = 0;
  d.fingerprint = async () => ({ healthy: true, detail: `call ${++calls}`, attributes: {} });
  assert.equal((await cache.get(d)).detail, 'call 1');
  now = 99;
  assert.equal((await cache.get(d)).detail, 'call 1');
  now = 100;
  assert.equal((await cache.get(d)).detail, 'call 2');
  const broken = fakeDriver('process');
  broken.fingerprint = async () => Promise.reject(new Error('no runc'));
  assert.deepEqual(await cache.get(broken), { healthy: false, detail: 'Error: no runc', attributes: {} });
});
