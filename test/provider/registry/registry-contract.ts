// One suite for every registry backend (containerd's testsuite, Hono's common cases):
// sqlite-driver.test.ts and postgres-driver.test.ts each call runRegistryContract.
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { openRegistry, type Registry, type DeploymentRecord } from '../../../src/provider/registry/index.ts';
import { MIGRATIONS, migrate } from '../../../src/provider/registry/migrations.ts';
import { openSqliteDriver } from '../../../src/provider/registry/sqlite-driver.ts';
import { createPostgresDriver } from '../../../src/provider/registry/postgres-driver.ts';
import type { SqlDriver } from '../../../src/provider/registry/sql-driver.ts';
import type { HostReport } from '../../../src/protocol/deployment.ts';
import { ShoalError } from '../../../src/protocol/errors.ts';
import type { TestDatabases } from './fixtures/databases.ts';

export interface ContractOptions {
  /** Skip the whole suite, saying why. */
  skip?: string;
}

export function desc(name: string, version: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name,
    version,
    image: `${name}:${version}`,
    operations: { Echo: { input: { type: 'object' }, output: { type: 'object' } } },
    ...extra,
  };
}

export function report(hostId: string, at: number, inFlight = 0): HostReport {
  return {
    hostId,
    controlUrl: `http://127.0.0.1:9${hostId.length}00`,
    dataUrl: `http://127.0.0.1:9${hostId.length}01`,
    at,
    capacity: { memoryMb: 4096, cpuMillis: 4000, instances: 32 },
    reserved: { memoryMb: 128, cpuMillis: 500, instances: 1 },
    free: { memoryMb: 3968, cpuMillis: 3500, instances: 31 },
    load: { instances: 1, inFlight, requestsTotal: 10 },
    layers: [{ digest: `sha256:${'a'.repeat(64)}`, size: 1000, inUse: true }],
    layerCache: { bytes: 1000, budgetBytes: 1 << 30 },
    drivers: [{ name: 'runc', default: true, capabilities: { isolation: 'namespaces', canPause: true, canSnapshot: false, canMigrate: false, canClone: false, enforcesLimits: true }, fingerprint: { healthy: true, detail: 'runc 1.2', attributes: {} } }],
  };
}

async function rawDriver(url: string): Promise<SqlDriver> {
  return /^postgres(ql)?:/.test(url) ? createPostgresDriver({ url }) : openSqliteDriver({ path: url });
}

async function rejectsWith(p: Promise<unknown>, code: string, field?: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof ShoalError, `expected ShoalError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (field !== undefined) assert.equal(e.field, field, e.message);
    return true;
  });
}

export function runRegistryContract(name: string, databases: () => Promise<TestDatabases>, options: ContractOptions = {}): void {
  describe(`registry contract: ${name}`, { skip: options.skip ?? false }, () => {
    let dbs: TestDatabases | undefined;

    before(async () => {
      dbs = await databases();
    });
    after(async () => {
      await dbs?.cleanup();
    });

    /**
     * A fresh empty database; `open` gives a new registry (its own connection, or its own
     * pool of 4) on it each call, closed when the test ends so that parallel test files
     * stay under the server's connection limit.
     */
    async function fresh(t: TestContext): Promise<{ url: string; open: () => Promise<Registry> }> {
      assert.ok(dbs);
      const url = await dbs.newUrl();
      const opened: Registry[] = [];
      t.after(async () => {
        for (const r of opened) await r.close().catch(() => undefined);
      });
      return {
        url,
        open: async () => {
          const r = await openRegistry({ url, maxConnections: 4 });
          opened.push(r);
          return r;
        },
      };
    }

    test('migrations: applied once, idempotent on reopen, safe when opened concurrently, refuse a newer schema', async (t) => {
      const db = await fresh(t);
      const [a, b, c] = await Promise.all([db.open(), db.open(), db.open()]);
      for (const r of [a, b, c]) assert.equal((await r!.info()).schemaVersion, MIGRATIONS.length);
      await a!.putService(desc('kept', '1'));
      await a!.close();
      const again = await db.open();
      assert.equal((await again.getService('kept'))?.version, '1', 'data survives reopening');

      const driver = await rawDriver(db.url);
      try {
        assert.deepEqual((await migrate(driver, 1)).applied, [], 'nothing left to apply');
        const future = [...MIGRATIONS, { version: 99, name: 'from the future', sql: () => 'CREATE TABLE future_thing (x INTEGER)' }];
        assert.deepEqual((await migrate(driver, 2, future)).applied, [99]);
      } finally {
        await driver.close();
      }
      await rejectsWith(openRegistry({ url: db.url }), 'unsupported');
    });

    test('services: put, get, versions, list, remove', async (t) => {
      const r = await (await fresh(t)).open();
      const v1 = await r.putService(desc('echo', '1'), 1000);
      assert.equal(v1.current, true);
      assert.equal(v1.createdAt, 1000);
      assert.deepEqual(v1.description.resources, { memoryMb: 128, cpuMillis: 500, pids: 64 }, 'stored with defaults');

      const v2 = await r.putService(desc('echo', '2', { scaling: { max: 9 } }), 2000);
      assert.equal((await r.getService('echo'))?.version, '2');
      assert.equal((await r.getService('echo'))?.description.scaling.max, 9);
      const old = await r.getService('echo', '1');
      assert.equal(old?.current, false, 'old version kept, not current');
      assert.deepEqual(old?.description, v1.description);
      assert.deepEqual(
        (await r.listServiceVersions('echo')).map((s) => [s.version, s.current]),
        [['1', false], ['2', true]],
      );
      assert.equal(v2.current, true);

      // Re-putting an older version makes it current again (a rollback).
      await r.putService(desc('echo', '1'), 3000);
      assert.equal((await r.getService('echo'))?.version, '1');
      assert.equal((await r.getService('echo'))?.updatedAt, 1000, 'unchanged description keeps updatedAt');
      await r.putService(desc('echo', '1', { scaling: { min: 1 } }), 4000);
      assert.equal((await r.getService('echo'))?.updatedAt, 4000);
      assert.equal((await r.getService('echo'))?.createdAt, 1000);

      await r.putService(desc('alpha', '1'));
      assert.deepEqual(
        (await r.listServices()).map((s) => `${s.name}@${s.version}`),
        ['alpha@1', 'echo@1'],
        'one current version per name, by name',
      );
      assert.equal(await r.getService('nope'), undefined);
      assert.equal(await r.getService('echo', '7'), undefined);

      const ready = await r.createDeployment({ service: 'echo', version: '1', state: 'ready', hostId: 'h1', instanceId: 'i1' });
      await r.createDeployment({ service: 'echo', version: '1', state: 'stopped' });
      await r.createDeployment({ service: 'alpha', version: '1', state: 'ready' });
      const toUndeploy = await r.removeService('echo');
      assert.deepEqual(toUndeploy.map((d) => d.id), [ready.id], 'returns the deployments still running');
      assert.equal(await r.getService('echo'), undefined);
      assert.deepEqual(await r.listServiceVersions('echo'), []);
      assert.deepEqual((await r.listServices()).map((s) => s.name), ['alpha']);
      await rejectsWith(r.removeService('echo'), 'not-found');
    });

    test('services: invalid descriptions are refused naming the field, and nothing is stored', async (t) => {
      const r = await (await fresh(t)).open();
      await rejectsWith(
        r.putService(desc('echo', '1', { operations: { Echo: { input: 'object', output: { type: 'object' } } } })),
        'invalid',
        '/operations/Echo/input',
      );
      await rejectsWith(r.putService(desc('Echo', '1')), 'invalid', '/name');
      await rejectsWith(r.putService(desc('echo', '1', { scaling: { min: 3, max: 2 } })), 'invalid', '/scaling/max');
      await rejectsWith(r.putService(null), 'invalid', '');
      assert.deepEqual(await r.listServices(), []);
    });

    test('hosts: register, report, suspect and dead by the given clock, revive', async (t) => {
      const r = await (await fresh(t)).open();
      const h = await r.upsertHost({ id: 'h1', controlUrl: 'http://c1', dataUrl: 'http://d1', labels: { zone: 'a' }, capabilities: { drivers: ['runc'] } }, 1000);
      assert.deepEqual(
        { state: h.state, lastSeen: h.lastSeen, registeredAt: h.registeredAt, labels: h.labels, capabilities: h.capabilities, lastReport: h.lastReport },
        { state: 'alive', lastSeen: 1000, registeredAt: 1000, labels: { zone: 'a' }, capabilities: { drivers: ['runc'] }, lastReport: undefined },
      );
      await r.upsertHost({ id: 'h2', controlUrl: 'http://c2', dataUrl: 'http://d2' }, 1500);
      await rejectsWith(r.recordHostReport('ghost', report('ghost', 1), 1), 'not-found');

      const rep = report('h1', 1900, 3);
      const { host, previousState } = await r.recordHostReport('h1', rep, 2000);
      assert.equal(previousState, 'alive');
      assert.equal(host.lastSeen, 2000);
      assert.deepEqual(host.lastReport, rep);
      assert.equal(host.controlUrl, rep.controlUrl, 'URLs follow the report');

      const limits = { suspectAfterMs: 5000, deadAfterMs: 15_000 };
      assert.deepEqual(await r.markHosts(6000, limits), [], 'h2 silent 4.5 s: still alive');
      const s1 = await r.markHosts(6600, limits);
      assert.deepEqual(s1.map((c) => [c.host.id, c.from, c.host.state]), [['h2', 'alive', 'suspect']]);
      assert.deepEqual(await r.markHosts(6600, limits), [], 'a transition is reported once');
      const s2 = await r.markHosts(17_100, limits);
      assert.deepEqual(
        s2.map((c) => [c.host.id, c.from, c.host.state]),
        [['h1', 'alive', 'dead'], ['h2', 'suspect', 'dead']],
        'alive straight to dead when silent past deadAfterMs',
      );
      assert.deepEqual(await r.markHosts(99_000, limits), []);

      const back = await r.recordHostReport('h2', report('h2', 20_000), 20_000);
      assert.equal(back.previousState, 'dead');
      assert.equal(back.host.state, 'alive');

      const re = await r.upsertHost({ id: 'h1', controlUrl: 'http://c1b', dataUrl: 'http://d1b' }, 21_000);
      assert.equal(re.state, 'alive');
      assert.equal(re.registeredAt, 1000, 're-registration keeps the first registration time');
      assert.equal(re.controlUrl, 'http://c1b');
      assert.deepEqual((await r.listHosts()).map((x) => [x.id, x.state]), [['h1', 'alive'], ['h2', 'alive']]);
      assert.equal((await r.getHost('h2'))?.lastSeen, 20_000);
      assert.equal(await r.removeHost('h2'), true);
      assert.equal(await r.removeHost('h2'), false);
      assert.equal(await r.getHost('h2'), undefined);
      await rejectsWith(r.markHosts(1, { suspectAfterMs: 10, deadAfterMs: 5 }), 'invalid', 'deadAfterMs');
    });

    test('hosts: a round of reports is one write; unknown hosts come back undefined, the rest revive', async (t) => {
      const r = await (await fresh(t)).open();
      for (const id of ['h1', 'h2', 'h3']) await r.upsertHost({ id, controlUrl: `http://c-${id}`, dataUrl: `http://d-${id}` }, 1000);
      await r.markHosts(20_000, { suspectAfterMs: 5000, deadAfterMs: 15_000 });
      assert.deepEqual(await r.recordHostReports([], 1), []);
      const out = await r.recordHostReports(
        [
          { id: 'h1', report: report('h1', 30_000, 1) },
          { id: 'ghost', report: report('ghost', 30_000) },
          { id: 'h3', report: report('h3', 30_000, 2) },
        ],
        30_000,
      );
      assert.deepEqual(out.map((x) => x && [x.host.id, x.previousState, x.host.state, x.host.lastSeen]), [['h1', 'dead', 'alive', 30_000], undefined, ['h3', 'dead', 'alive', 30_000]]);
      assert.deepEqual((await r.listHosts()).map((x) => [x.id, x.state]), [['h1', 'alive'], ['h2', 'dead'], ['h3', 'alive']]);
      assert.deepEqual((await r.getHost('h3'))?.lastReport, report('h3', 30_000, 2));
    });

    test('hosts: the control token has its own column; a version-1 database moves it out of capabilities', async (t) => {
      const db = await fresh(t);
      const driver = await rawDriver(db.url);
      try {
        assert.deepEqual((await migrate(driver, 1, MIGRATIONS.slice(0, 1))).applied, [1]);
        // What version 1 wrote: the token inside the capabilities JSON.
        await driver.query(
          `INSERT INTO hosts (id, control_url, data_url, labels, capabilities, last_seen, state, registered_at) VALUES ($1, $2, $3, $4, $5, 0, 'alive', 0)`,
          ['old', 'http://c', 'http://d', '{}', JSON.stringify({ drivers: [{ name: 'runc' }], controlToken: 'tok-from-v1' })],
        );
      } finally {
        await driver.close();
      }
      const r = await db.open();
      const old = await r.getHost('old');
      assert.equal(old?.controlToken, 'tok-from-v1');
      assert.deepEqual(old?.capabilities, { drivers: [{ name: 'runc' }] }, 'the token left the capabilities');
      const fresh2 = await r.upsertHost({ id: 'new', controlUrl: 'http://c', dataUrl: 'http://d', controlToken: 'tok-12345678' }, 0);
      assert.equal(fresh2.controlToken, 'tok-12345678');
      assert.deepEqual(fresh2.capabilities, {});
      assert.equal((await r.upsertHost({ id: 'new', controlUrl: 'http://c', dataUrl: 'http://d', controlToken: 'tok-rotated' }, 1)).controlToken, 'tok-rotated');
      assert.equal((await r.upsertHost({ id: 'none', controlUrl: 'http://c', dataUrl: 'http://d' }, 0)).controlToken, undefined);
    });

    test('hosts: two registries marking at once report each transition once', async (t) => {
      const db = await fresh(t);
      const [a, b] = await Promise.all([db.open(), db.open()]);
      for (let i = 0; i < 10; i++) await a!.upsertHost({ id: `h${i}`, controlUrl: 'http://c', dataUrl: 'http://d' }, 0);
      const limits = { suspectAfterMs: 10, deadAfterMs: 20 };
      const results = await Promise.all([a!, b!, a!, b!].map((r) => r.markHosts(100, limits)));
      const ids = results.flat().map((c) => c.host.id).sort();
      assert.deepEqual(ids, Array.from({ length: 10 }, (_, i) => `h${i}`).sort());
    });

    test('deployments: claim, deploying, ready, stopped, filters, conflicts', async (t) => {
      const r = await (await fresh(t)).open();
      const c = await r.claimDeployment({ service: 'echo', version: '1', providerId: 'p1', now: 1000, leaseMs: 30_000 });
      assert.ok(c.claimed);
      const d = c.deployment;
      assert.deepEqual(
        { state: d.state, claimedBy: d.claimedBy, leaseUntil: d.leaseUntil, createdAt: d.createdAt, hostId: d.hostId },
        { state: 'pending', claimedBy: 'p1', leaseUntil: 31_000, createdAt: 1000, hostId: undefined },
      );
      const busy = await r.claimDeployment({ service: 'echo', version: '1', providerId: 'p2', now: 2000, leaseMs: 30_000 });
      assert.ok(!busy.claimed);
      assert.equal(busy.existing.id, d.id);
      const busyAdd = await r.claimDeployment({ service: 'echo', version: '1', providerId: 'p2', now: 2000, leaseMs: 30_000, mode: 'add' });
      assert.ok(!busyAdd.claimed, 'add mode still waits for the one in flight');

      assert.equal(await r.renewClaim(d.id, 'p1', 5000, 30_000), true);
      assert.equal((await r.getDeployment(d.id))?.leaseUntil, 35_000);
      assert.equal(await r.renewClaim(d.id, 'p2', 5000, 30_000), false, 'only the claimant renews');

      const deploying = await r.updateDeployment(d.id, { state: 'deploying', hostId: 'h1', now: 6000, ifState: 'pending' });
      assert.equal(deploying.state, 'deploying');
      assert.equal(deploying.hostId, 'h1');
      assert.equal(deploying.updatedAt, 6000);
      await rejectsWith(r.updateDeployment(d.id, { state: 'ready', ifState: 'pending' }), 'conflict', 'state');
      await rejectsWith(r.updateDeployment('nope', { state: 'ready' }), 'not-found', 'id');

      const endpoint = {
        instance: 'i1',
        service: { name: 'echo', version: '1' },
        host: { dataUrl: 'http://d1' },
        url: 'http://d1/i/i1',
        token: 'tok',
        expiresAt: 99_999,
      };
      const timeline = { startedAt: 6000, phases: [{ name: 'pull' as const, startMs: 0, endMs: 5 }], pull: { bytes: 10, layersFetched: 1, layersCached: 0 }, totalMs: 9 };
      const ready = await r.updateDeployment(d.id, { state: 'ready', instanceId: 'i1', endpoint, timeline, now: 7000, ifState: ['pending', 'deploying'] });
      assert.deepEqual(
        { state: ready.state, instanceId: ready.instanceId, endpoint: ready.endpoint, timeline: ready.timeline },
        { state: 'ready', instanceId: 'i1', endpoint, timeline },
      );
      assert.equal(await r.renewClaim(d.id, 'p1', 8000, 1000), false, 'a finished deployment has no lease to renew');

      const cold = await r.claimDeployment({ service: 'echo', version: '1', providerId: 'p2', now: 8000, leaseMs: 30_000 });
      assert.ok(!cold.claimed, 'cold claim finds the ready deployment');
      assert.equal(cold.existing.id, d.id);
      const add = await r.claimDeployment({ service: 'echo', version: '1', providerId: 'p2', now: 8000, leaseMs: 30_000, mode: 'add', hostId: 'h2' });
      assert.ok(add.claimed, 'add mode claims a second instance');
      assert.equal(add.deployment.hostId, 'h2');
      const failed = await r.updateDeployment(add.deployment.id, { state: 'failed', error: 'admission refused', now: 9000 });
      assert.equal(failed.error, 'admission refused');

      await rejectsWith(
        r.createDeployment({ service: 'echo', version: '1', state: 'pending' }).then(() => r.createDeployment({ service: 'echo', version: '1', state: 'deploying' })),
        'conflict',
      );
      const inFlight = await r.listDeployments({ service: 'echo', state: ['pending', 'deploying'] });
      assert.equal(inFlight.length, 1);
      const other = await r.createDeployment({ service: 'echo', version: '1', state: 'stopped' });
      await rejectsWith(r.updateDeployment(other.id, { state: 'pending' }), 'conflict', 'state');
      await rejectsWith(r.createDeployment({ id: other.id, service: 'echo', version: '1', state: 'stopped' }), 'conflict', 'id');

      const cleared = await r.updateDeployment(ready.id, { state: 'stopped', endpoint: null, error: null });
      assert.equal(cleared.endpoint, undefined, 'null clears a field');
      assert.equal(cleared.instanceId, 'i1', 'undefined leaves it');

      await r.createDeployment({ service: 'other', version: '3', state: 'ready', hostId: 'h2' });
      const all = await r.listDeployments();
      assert.equal(all.length, 5);
      assert.deepEqual(all.map((x) => x.createdAt), [...all.map((x) => x.createdAt)].sort((x, y) => x - y), 'oldest first');
      assert.deepEqual((await r.listDeployments({ service: 'other' })).map((x) => x.version), ['3']);
      assert.deepEqual((await r.listDeployments({ hostId: 'h2' })).map((x) => x.state).sort(), ['failed', 'ready']);
      assert.deepEqual((await r.listDeployments({ state: 'stopped' })).length, 2);
      assert.deepEqual(await r.listDeployments({ state: [] }), []);
    });

    test('deployments: an expired claim is taken over once', async (t) => {
      const db = await fresh(t);
      const [a, b] = await Promise.all([db.open(), db.open()]);
      const first = await a!.claimDeployment({ service: 'svc', version: '1', providerId: 'dead-provider', now: 0, leaseMs: 1000 });
      assert.ok(first.claimed);
      const notYet = await b!.claimDeployment({ service: 'svc', version: '1', providerId: 'p2', now: 999, leaseMs: 1000 });
      assert.ok(!notYet.claimed, 'lease still running');
      const attempts = await Promise.all(
        Array.from({ length: 40 }, (_, i) => (i % 2 ? a! : b!).claimDeployment({ service: 'svc', version: '1', providerId: `p${i}`, now: 1001, leaseMs: 1000 })),
      );
      const winners = attempts.filter((x) => x.claimed);
      assert.equal(winners.length, 1);
      const w = winners[0]!;
      assert.ok(w.claimed);
      assert.equal(w.tookOver?.id, first.deployment.id);
      assert.match(w.tookOver?.error ?? '', /dead-provider/);
      const states = (await a!.listDeployments({ service: 'svc' })).map((d) => [d.id, d.state]);
      assert.deepEqual(states, [[first.deployment.id, 'failed'], [w.deployment.id, 'pending']]);
    });

    test('claim race: two registries, 50 claims each for one cold service, exactly one wins', async (t) => {
      const db = await fresh(t);
      const [a, b] = await Promise.all([db.open(), db.open()]);
      await a!.putService(desc('cold', '1'));
      for (let round = 0; round < 3; round++) {
        const service = `cold-${round}`;
        const claims = Array.from({ length: 100 }, (_, i) =>
          (i % 2 === 0 ? a! : b!).claimDeployment({ service, version: '1', providerId: i % 2 === 0 ? 'pa' : 'pb', now: 1000 + i, leaseMs: 60_000 }),
        );
        const results = await Promise.all(claims);
        const won = results.filter((x) => x.claimed);
        assert.equal(won.length, 1, `round ${round}: exactly one claim wins`);
        const winner = won[0]!;
        assert.ok(winner.claimed);
        for (const x of results) {
          if (!x.claimed) assert.equal(x.existing.id, winner.deployment.id, 'every loser is pointed at the winner');
        }
        const rows: DeploymentRecord[] = await b!.listDeployments({ service });
        assert.equal(rows.length, 1, 'one deployment row');
      }
    });

    test('events: append, filter, newest window, follow', async (t) => {
      const r = await (await fresh(t)).open();
      const appended = [];
      for (let i = 0; i < 6; i++) {
        appended.push(
          await r.appendEvent({
            at: 100 + i,
            kind: i % 2 ? 'instance.ready' : 'instance.crashed',
            service: i < 4 ? 'echo' : 'other',
            hostId: 'h1',
            instanceId: `i${i}`,
            detail: { n: i, nested: { ok: true } },
          }),
        );
      }
      const bare = await r.appendEvent({ kind: 'provider.started', at: 200 });
      assert.deepEqual(
        { service: bare.service, hostId: bare.hostId, instanceId: bare.instanceId, detail: bare.detail },
        { service: undefined, hostId: undefined, instanceId: undefined, detail: undefined },
      );
      const ids = appended.map((e) => e.id);
      assert.deepEqual(ids, [...ids].sort((x, y) => x - y), 'ids increase');
      assert.deepEqual(appended[2]?.detail, { n: 2, nested: { ok: true } });

      assert.deepEqual((await r.listEvents({ service: 'echo' })).map((e) => e.instanceId), ['i0', 'i1', 'i2', 'i3']);
      assert.deepEqual((await r.listEvents({ limit: 3 })).map((e) => e.at), [104, 105, 200], 'newest three, oldest first');
      assert.deepEqual((await r.listEvents({ afterId: ids[3]!, limit: 2 })).map((e) => e.at), [104, 105], 'following from an id');
      assert.deepEqual((await r.listEvents({ kind: 'instance.ready', service: 'echo' })).map((e) => e.instanceId), ['i1', 'i3']);
      assert.equal((await r.listEvents({ hostId: 'h1' })).length, 6);
      assert.equal((await r.listEvents()).length, 7);
    });

    test('api tokens: create, get, list, revoke once; ids are unique; a revocation is seen by another connection at once', async (t) => {
      const db = await fresh(t);
      const [a, b] = [await db.open(), await db.open()];
      const hash = 'ab'.repeat(32);
      const made = await a.createApiToken({ id: '0123456789ab', hash, role: 'invoke', services: ['echo', 'other'], note: 'n', createdAt: 1000, expiresAt: 5000 });
      assert.deepEqual(made, { id: '0123456789ab', hash, role: 'invoke', services: ['echo', 'other'], note: 'n', createdAt: 1000, expiresAt: 5000, revokedAt: undefined });
      const plain = await a.createApiToken({ id: 'ffffffffffff', hash: 'cd'.repeat(32), role: 'admin', createdAt: 2000 });
      assert.deepEqual([plain.services, plain.note, plain.expiresAt], [undefined, undefined, undefined]);
      await rejectsWith(a.createApiToken({ id: 'ffffffffffff', hash, role: 'read', createdAt: 3000 }), 'conflict', 'id');
      assert.deepEqual((await b.listApiTokens()).map((x) => x.id), ['0123456789ab', 'ffffffffffff']);
      assert.equal(await a.revokeApiToken('0123456789ab', 4000), true);
      assert.equal(await a.revokeApiToken('0123456789ab', 4500), false, 'already revoked');
      assert.equal(await a.revokeApiToken('nope', 4500), false);
      assert.equal((await b.getApiToken('0123456789ab'))?.revokedAt, 4000, 'the other connection sees it');
      assert.equal(await b.getApiToken('nope'), undefined);
    });

    test('audit: append, filter by service, token and time, newest window', async (t) => {
      const r = await (await fresh(t)).open();
      for (let i = 0; i < 6; i++) {
        await r.appendAudit({
          at: 100 + i,
          ...(i % 3 === 0 ? {} : { tokenId: `t${i % 2}`, role: 'deploy' }),
          method: 'POST',
          route: '/api/v1/services',
          path: '/api/v1/services',
          ...(i < 4 ? { service: 'echo' } : {}),
          address: '127.0.0.1',
          status: i % 3 === 0 ? 401 : 201,
        });
      }
      const all = await r.listAudit();
      assert.equal(all.length, 6);
      assert.deepEqual(all[0], { id: all[0]!.id, at: 100, method: 'POST', route: '/api/v1/services', path: '/api/v1/services', service: 'echo', address: '127.0.0.1', status: 401 });
      assert.deepEqual(all[1]?.tokenId, 't1');
      assert.deepEqual((await r.listAudit({ service: 'echo' })).map((e) => e.at), [100, 101, 102, 103]);
      assert.deepEqual((await r.listAudit({ since: 102, until: 105 })).map((e) => e.at), [102, 103, 104]);
      assert.deepEqual((await r.listAudit({ tokenId: 't0' })).map((e) => e.at), [102, 104]);
      assert.deepEqual((await r.listAudit({ limit: 2 })).map((e) => e.at), [104, 105], 'newest two, oldest first');
    });

    test('saved states: save, get, filter, expire once across two registries, remove', async (t) => {
      const db = await fresh(t);
      const [a, b] = [await db.open(), await db.open()];
      const base = { service: 'counter', version: '1', size: 4096, driver: 'wasm' } as const;
      const s1 = await a.saveState({ ...base, id: 's1', digest: `sha256:${'1'.repeat(64)}`, reason: 'snapshot', label: 'before', sourceInstance: 'i1', sourceHost: 'h1', createdAt: 100 });
      assert.deepEqual(s1, { ...base, id: 's1', digest: `sha256:${'1'.repeat(64)}`, reason: 'snapshot', label: 'before', sourceInstance: 'i1', sourceHost: 'h1', createdAt: 100, expiresAt: undefined });
      await a.saveState({ ...base, id: 's2', digest: `sha256:${'2'.repeat(64)}`, reason: 'suspend', createdAt: 200, expiresAt: 1000 });
      await a.saveState({ ...base, id: 's3', service: 'other', digest: `sha256:${'3'.repeat(64)}`, reason: 'farm', createdAt: 300, expiresAt: 2000 });
      await rejectsWith(a.saveState({ ...base, id: 's1', digest: 'x', reason: 'snapshot', createdAt: 1 }), 'conflict', 'id');
      await rejectsWith(a.saveState({ ...base, digest: 'x', reason: 'whim' as 'snapshot', createdAt: 1 }), 'invalid', 'reason');
      assert.deepEqual((await b.listStates()).map((x) => x.id), ['s3', 's2', 's1'], 'newest first');
      assert.deepEqual((await b.listStates({ service: 'counter' })).map((x) => x.id), ['s2', 's1']);
      assert.deepEqual((await b.listStates({ reason: 'suspend' })).map((x) => x.id), ['s2']);
      assert.deepEqual((await b.listStates({ label: 'before' })).map((x) => x.id), ['s1']);
      assert.deepEqual((await b.listStates({ liveAt: 1500 })).map((x) => x.id), ['s3', 's1'], 's2 expired at 1000');
      const [ea, eb] = await Promise.all([a.expireStates(1500), b.expireStates(1500)]);
      assert.deepEqual([...ea, ...eb].map((x) => x.id), ['s2'], 'each expired state comes back to one caller');
      assert.equal(await a.getState('s2'), undefined);
      assert.equal(await a.removeState('s1'), true);
      assert.equal(await a.removeState('s1'), false);
      assert.equal((await b.getState('s3'))?.driver, 'wasm');
    });

    test('traffic: every provider reports, the newest message wins, counts add up, forgotten when gone', async (t) => {
      const db = await fresh(t);
      const [a, b] = [await db.open(), await db.open()];
      await a.recordTraffic('p1', [
        { instanceId: 'i1', lastMessageAt: 1000, messages: 3 },
        { instanceId: 'i2', lastMessageAt: 500, messages: 1 },
      ]);
      await b.recordTraffic('p2', [{ instanceId: 'i1', lastMessageAt: 4000, messages: 2 }]);
      await a.recordTraffic('p1', [{ instanceId: 'i1', lastMessageAt: 900, messages: 1 }]);
      const last = await b.lastTraffic(['i1', 'i2', 'i3']);
      assert.deepEqual([...last.entries()].sort(), [['i1', 4000], ['i2', 500]], 'max over providers; an older report never moves it back; unknown absent');
      const many = Array.from({ length: 1200 }, (_, i) => ({ instanceId: `m${i}`, lastMessageAt: i, messages: 1 }));
      await a.recordTraffic('p1', many);
      assert.equal((await a.lastTraffic(many.map((m) => m.instanceId))).size, 1200, 'batches past one statement');
      await a.forgetTraffic(['i1', ...many.map((m) => m.instanceId)]);
      assert.deepEqual([...(await b.lastTraffic(['i1', 'i2', 'm5'])).keys()], ['i2']);
    });

    test('deployments: pausedAt is set and cleared', async (t) => {
      const r = await (await fresh(t)).open();
      const d = await r.createDeployment({ service: 'counter', version: '1', state: 'ready', hostId: 'h1', instanceId: 'i1' });
      assert.equal(d.pausedAt, undefined);
      assert.equal((await r.updateDeployment(d.id, { pausedAt: 1234 })).pausedAt, 1234);
      assert.equal((await r.updateDeployment(d.id, { pausedAt: null })).pausedAt, undefined);
    });
  });
}
