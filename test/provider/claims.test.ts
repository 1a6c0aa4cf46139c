// Claims and leases on a real (SQLite) registry: one slot per service, the lease held by
// renewals, the slot given back after a provider error, and watching another provider's
// deployment; a failed renewal is logged, never silent.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClaims } from '../../src/provider/claims.ts';
import { openRegistry, type Registry } from '../../src/provider/registry/index.ts';
import { ECHO_TEST_SERVICE } from './fixtures/fake-host.ts';
import { validateServiceDescription } from '../../src/protocol/service.ts';

async function setup(t: { after(fn: () => Promise<void>): void }) {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-claims-'));
  const registry = await openRegistry({ sqlitePath: join(dir, 'shoal.db') });
  t.after(async () => {
    await registry.close();
    await rm(dir, { recursive: true, force: true });
  });
  await registry.putService(validateServiceDescription(ECHO_TEST_SERVICE));
  let now = Date.now();
  const logged: Array<{ msg: string | undefined; obj: object }> = [];
  const ticks: Array<() => void> = [];
  const log = {
    info() {},
    warn: (obj: object, msg?: string) => logged.push({ obj, msg }),
    error: (obj: object, msg?: string) => logged.push({ obj, msg }),
  };
  const make = (providerId: string, r: Registry = registry) =>
    createClaims({
      registry: r,
      providerId,
      log,
      leaseMs: 30_000,
      watchIntervalMs: 5,
      now: () => now,
      timers: {
        every: (fn) => ticks.push(fn) - 1,
        clear: (h) => (ticks[h as number] = () => {}),
      },
    });
  return { registry, make, logged, ticks, advance: (ms: number) => (now += ms) };
}

const settle = () => new Promise((r) => setTimeout(r, 20));

test('one slot per service: the second provider is told whose deployment holds it', async (t) => {
  const s = await setup(t);
  const a = s.make('provider-a');
  const b = s.make('provider-b');
  const won = await a.claim({ service: 'echo', version: '1', mode: 'cold', hostId: 'h1' });
  assert.equal(won.claimed, true);
  const lost = await b.claim({ service: 'echo', version: '1', mode: 'cold' });
  assert.equal(lost.claimed, false);
  assert.equal(!lost.claimed && lost.existing.claimedBy, 'provider-a');
});

test('a held lease is renewed; once stopped it lapses and another provider takes the slot over', async (t) => {
  const s = await setup(t);
  const a = s.make('provider-a');
  const b = s.make('provider-b');
  const won = await a.claim({ service: 'echo', version: '1', mode: 'cold' });
  assert.ok(won.claimed);
  const lease = a.hold(won.deployment.id);
  s.advance(25_000);
  s.ticks.forEach((f) => f()); // the renewal timer fires
  await settle();
  s.advance(25_000); // 50 s after the claim, 25 s after the renewal: still held
  assert.equal((await b.claim({ service: 'echo', version: '1', mode: 'cold' })).claimed, false);
  lease.stop();
  s.ticks.forEach((f) => f()); // stopped: nothing renews
  await settle();
  s.advance(10_000);
  const taken = await b.claim({ service: 'echo', version: '1', mode: 'cold' });
  assert.equal(taken.claimed, true);
  assert.equal(taken.claimed && taken.tookOver?.id, won.deployment.id);
  assert.ok(s.logged.some((l) => l.msg === 'took over an expired deployment claim'));
});

test('giving back the slot after a provider error lets the next attempt claim at once', async (t) => {
  const s = await setup(t);
  const a = s.make('provider-a');
  const won = await a.claim({ service: 'echo', version: '1', mode: 'cold' });
  assert.ok(won.claimed);
  await a.giveBack(won.deployment.id, 'database went away');
  const record = await s.registry.getDeployment(won.deployment.id);
  assert.equal(record?.state, 'failed');
  assert.equal(record?.error, 'provider error: database went away');
  assert.equal((await a.claim({ service: 'echo', version: '1', mode: 'cold' })).claimed, true);
  // Giving back a slot that is no longer in flight changes nothing and is no error.
  await a.giveBack(won.deployment.id, 'again');
  assert.equal((await s.registry.getDeployment(won.deployment.id))?.error, 'provider error: database went away');
  assert.deepEqual(s.logged.filter((l) => /registry write failed/.test(l.msg ?? '')), []);
});

test("watching another provider's deployment: ready → the record; failed, deadline or abort → undefined", async (t) => {
  const s = await setup(t);
  const a = s.make('provider-a');
  const b = s.make('provider-b');
  const won = await a.claim({ service: 'echo', version: '1', mode: 'cold', hostId: 'h1' });
  assert.ok(won.claimed);
  const watching = b.watch(won.deployment, Number.MAX_SAFE_INTEGER, new AbortController().signal);
  await s.registry.updateDeployment(won.deployment.id, { state: 'ready', instanceId: 'echo-1', leaseUntil: null });
  assert.equal((await watching)?.instanceId, 'echo-1');

  const second = await a.claim({ service: 'echo', version: '1', mode: 'add' });
  assert.ok(second.claimed);
  const failing = b.watch(second.deployment, Number.MAX_SAFE_INTEGER, new AbortController().signal);
  await s.registry.updateDeployment(second.deployment.id, { state: 'failed', error: 'x', leaseUntil: null });
  assert.equal(await failing, undefined);

  const third = await a.claim({ service: 'echo', version: '1', mode: 'add' });
  assert.ok(third.claimed);
  assert.equal(await b.watch(third.deployment, 0, new AbortController().signal), undefined, 'past the deadline');
  const ac = new AbortController();
  const aborted = b.watch(third.deployment, Number.MAX_SAFE_INTEGER, ac.signal);
  ac.abort();
  assert.equal(await aborted, undefined);
});

test('a failed renewal or give-back is logged with the deployment, never silent', async (t) => {
  const s = await setup(t);
  const broken = {
    ...s.registry,
    claimDeployment: s.registry.claimDeployment.bind(s.registry),
    getDeployment: s.registry.getDeployment.bind(s.registry),
    renewClaim: async () => {
      throw new Error('disk full');
    },
    updateDeployment: async () => {
      throw new Error('disk full');
    },
  } as Registry;
  const a = s.make('provider-a', broken);
  const won = await a.claim({ service: 'echo', version: '1', mode: 'cold' });
  assert.ok(won.claimed);
  a.hold(won.deployment.id);
  s.ticks.forEach((f) => f());
  await a.giveBack(won.deployment.id, 'boom');
  await settle();
  const failures = s.logged.filter((l) => /registry write failed/.test(l.msg ?? ''));
  assert.equal(failures.length, 2);
  for (const f of failures) assert.deepEqual(f.obj, { deployment: won.deployment.id, err: 'disk full' });
});
