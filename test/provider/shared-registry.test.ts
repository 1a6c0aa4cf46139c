// Two providers on one PostgreSQL registry: a cold service still gets exactly one
// deployment (the database decides who deploys; the other follows the winner's record),
// both serve its messages, and one stopping leaves the other serving.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { postgresDatabases } from './registry/fixtures/databases.ts';
import { startFarm, until } from './fixtures/provider.ts';
import { ECHO_TEST_SERVICE } from './fixtures/fake-host.ts';

const adminUrl = process.env.SHOAL_TEST_DATABASE_URL;
const skip = adminUrl
  ? false
  : process.env.CI === 'true'
    ? false
    : 'SHOAL_TEST_DATABASE_URL is unset (e.g. postgres://shoal:shoal@127.0.0.1:5432/postgres): two-provider test skipped';
if (skip) console.log(`# ${skip}`);

test('two providers on one PostgreSQL: one deployment per cold service, both serve, one stopping leaves the other serving', { skip }, async (t) => {
  assert.ok(adminUrl, 'CI=true but SHOAL_TEST_DATABASE_URL is unset: this test must run in CI');
  const dbs = await postgresDatabases(adminUrl);
  const database = await dbs.newUrl();
  const service = { ...ECHO_TEST_SERVICE, scaling: { targetConcurrency: 1000 } };
  const farm = await startFarm(t, { hosts: 2, database, service });
  t.after(() => dbs.cleanup()); // after the farm's own cleanup (hooks run in order): providers first
  farm.hosts.forEach((h) => (h.deployMs = 200));
  const second = await farm.another({ providerId: 'second' });
  assert.notEqual(second.providerId, farm.provider.providerId);
  // Both providers place only on hosts whose report they have read: wait for it, as a
  // loaded machine may start the burst before the second one's first read of the registry.
  for (const p of [farm.provider, second]) {
    await until('both hosts reported to every provider', () => p.hosts().filter((h) => h.state === 'alive' && h.report !== undefined).length === 2, 30_000);
  }

  for (const name of ['alpha', 'beta', 'gamma']) {
    await farm.provider.registerService({ ...service, name });
    const send = (url: string, i: number) =>
      fetch(`${url}/s/${name}/Echo`, { method: 'POST', headers: { authorization: `Bearer ${farm.token}`, 'content-type': 'application/json' }, body: JSON.stringify({ message: `${name}-${i}` }) }).then(async (r) => ({ status: r.status, body: await r.json() }));
    // Half the burst to each provider, at the same moment; the second has never heard of the service.
    const replies = await Promise.all(Array.from({ length: 40 }, (_, i) => send(i % 2 ? second.url : farm.provider.url, i)));
    replies.forEach((r, i) => {
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.deepEqual(r.body, { message: `${name}-${i}` });
    });
    const plans = farm.hosts.flatMap((h) => h.plans).filter((p) => p.service.name === name);
    assert.equal(plans.length, 1, `one deployment of ${name}`);
    const records = await farm.provider.registry.listDeployments({ service: name });
    assert.deepEqual(records.map((r) => r.state), ['ready']);
  }

  // Both route to the same instance.
  assert.deepEqual(
    farm.provider.table.endpoints('alpha').map((e) => e.id),
    second.table.endpoints('alpha').map((e) => e.id),
  );
  // One provider goes away: the other keeps serving.
  await farm.provider.close();
  for (let i = 0; i < 5; i++) {
    const r = await fetch(`${second.url}/s/alpha/Echo`, { method: 'POST', headers: { authorization: `Bearer ${farm.token}`, 'content-type': 'application/json' }, body: '{"message":"still"}' });
    assert.equal(r.status, 200);
  }
  // And a crash seen by the survivor is recorded once.
  const ep = second.table.endpoints('beta')[0]!;
  const host = farm.hosts.find((h) => h.id === ep.hostId)!;
  host.crash(ep.id);
  await until('the crash recorded', async () => (await second.registry.listDeployments({ service: 'beta' })).some((d) => d.state === 'failed'));
});
