// Live migration on the host, with test doubles for the instance store and the driver: the
// source's hold bracket (held from the driver's call, kept after success until removal,
// let go after failure), and the target's offer → accept / abort.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createLiveMigration, type LiveMigrationDeps } from '../../../src/host/instances/live-migration.ts';
import { createHolds } from '../../../src/host/instances/live-state.ts';
import type { LiveInstance } from '../../../src/host/instances/instance-store.ts';
import type { IncomingMigration, MigrationHold, RunningInstance } from '../../../src/host/drivers/driver.ts';
import { silentLogger } from '../../../src/host/ports.ts';
import { isShoalError, ShoalError, type DeploymentPlan, type DeploymentResult, type MigrationOffer } from '../../../src/protocol/index.ts';

const offer: MigrationOffer = { address: '127.0.0.1:1', key: 'a'.repeat(64), annotations: {} };
const stats = { totalMs: 10, downtimeMs: 2, heldMs: 4, bytes: 100 };

function live(running: object): LiveInstance {
  return { record: { id: 'i1', state: 'ready' }, driver: { name: 'vm' }, running } as unknown as LiveInstance;
}

function deps(running: object, steps: string[], extra: Partial<LiveMigrationDeps> = {}): LiveMigrationDeps {
  return {
    store: { get: () => live(running) },
    quiesce: async () => {
      steps.push('quiesce');
      return () => steps.push('release');
    },
    deploy: async () => assert.fail('no deploy'),
    holds: createHolds(),
    log: silentLogger,
    ...extra,
  };
}

describe('live migration on the host', () => {
  it('refuses an instance whose driver cannot migrate live, with reason not-supported', async () => {
    const m = createLiveMigration(deps({ id: 'i1' }, []));
    await assert.rejects(m.send('i1', offer), (e: unknown) => isShoalError(e) && e.code === 'unsupported' && (e.detail as { reason: string }).reason === 'not-supported');
  });

  it('source: holds from the driver\'s call, and keeps holding after success until the instance goes', async () => {
    const steps: string[] = [];
    const running = {
      id: 'i1',
      async migrateTo(o: MigrationOffer, h: MigrationHold) {
        assert.equal(o, offer);
        steps.push('precopy');
        await h.hold();
        steps.push('switch-over');
        return stats;
      },
      async resumeHere() {
        steps.push('resume-here');
      },
    };
    const d = deps(running, steps);
    const m = createLiveMigration(d);
    const r = await m.send('i1', offer);
    assert.deepEqual(r, { id: 'i1', ...stats });
    assert.deepEqual(steps, ['precopy', 'quiesce', 'switch-over'], 'no release: held until the instance is removed');
    assert.equal(d.holds.has('i1'), true);
    await assert.rejects(m.send('i1', offer), /held for a move already/);
    // The target failed after the move: the instance runs here again and its messages go on.
    await m.resumeHere('i1');
    assert.deepEqual(steps.slice(-2), ['resume-here', 'release']);
    assert.equal(d.holds.has('i1'), false);
  });

  it('source: a failed move lets the held messages go on to the instance, which runs on', async () => {
    const steps: string[] = [];
    const running = {
      id: 'i1',
      async migrateTo(_o: MigrationOffer, h: MigrationHold) {
        await h.hold();
        throw new ShoalError('conflict', 'given up', { detail: { reason: 'in-flight' } });
      },
      async resumeHere() {},
    };
    const d = deps(running, steps);
    await assert.rejects(createLiveMigration(d).send('i1', offer), /given up/);
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(steps, ['quiesce', 'release']);
    assert.equal(d.holds.has('i1'), false);
  });

  it('target: answers the offer once the driver waits, then the deployment on accept; abort cancels', async () => {
    const cancelled: string[] = [];
    const deploy = (plan: DeploymentPlan, origin?: { incoming?: (instance: string, m: IncomingMigration) => void }): Promise<DeploymentResult> => {
      let fail!: (e: Error) => void;
      let ok!: (r: DeploymentResult) => void;
      const done = new Promise<DeploymentResult>((resolve, reject) => {
        ok = resolve;
        fail = reject;
      });
      const id = `${plan.service.name}-1`;
      setTimeout(() => {
        origin!.incoming!(id, {
          offer,
          instance: new Promise<RunningInstance>(() => {}),
          async cancel() {
            cancelled.push(id);
            fail(new ShoalError('unavailable', 'cancelled'));
          },
        });
        if (plan.service.name === 'fine') setTimeout(() => ok({ instance: { id } } as DeploymentResult), 5);
      }, 5);
      return done;
    };
    const m = createLiveMigration({ ...deps({}, []), deploy: deploy as LiveMigrationDeps['deploy'] });
    const plan = (name: string) => ({ service: { name, version: '1' } }) as DeploymentPlan;
    const first = await m.receive(plan('fine'));
    assert.deepEqual(first, { instance: 'fine-1', offer });
    assert.equal((await m.accept('fine-1')).instance.id, 'fine-1');
    await assert.rejects(m.accept('fine-1'), /not waiting/);
    const second = await m.receive(plan('other'));
    await m.abort(second.instance);
    assert.deepEqual(cancelled, ['other-1']);
    await assert.rejects(m.accept('other-1'), /not waiting/);
  });

  it('target: a deployment that fails before the offer fails receive', async () => {
    const m = createLiveMigration({ ...deps({}, []), deploy: async () => Promise.reject(new ShoalError('conflict', 'refused: no room')) });
    await assert.rejects(m.receive({ service: { name: 'x', version: '1' } } as DeploymentPlan), /no room/);
  });
});
