// Live migration on this host (issue 14), both ends. As the target: a deployment whose
// driver waits for the state (receive), answered early with the driver's offer, and whose
// end (ready, or failed and torn down) the provider collects with accept. As the source:
// the driver sends the running instance to an offer; new messages are held from just
// before its stop (the forwarder's quiesce), and stay held after success until the
// instance is removed (answered `gone`, so callers retry at the target) — as snapshot?hold=1.
import { canMigrateLive, type IncomingMigration } from '../drivers/driver.ts';
import type { InstanceStore } from './instance-store.ts';
import type { Holds } from './live-state.ts';
import type { Origin } from './deploy.ts';
import type { Logger } from '../ports.ts';
import { ShoalError, type DeploymentPlan, type DeploymentResult, type IncomingOffer, type LiveMigrationResult, type MigrationOffer } from '../../protocol/index.ts';

const QUIESCE_TIMEOUT_MS = 10_000;

export interface LiveMigrationDeps {
  store: Pick<InstanceStore, 'get'>;
  quiesce(id: string, timeoutMs: number): Promise<() => void>;
  deploy(plan: DeploymentPlan, origin?: Origin): Promise<DeploymentResult>;
  holds: Holds;
  log: Logger;
}

function notSupported(message: string): ShoalError {
  return new ShoalError('unsupported', message, { field: 'id', detail: { reason: 'not-supported' } });
}

export function createLiveMigration(deps: LiveMigrationDeps) {
  /** Targets waiting for their state or being collected, by instance id. */
  const incoming = new Map<string, { result: Promise<DeploymentResult>; migration: IncomingMigration }>();

  /** Deploys `plan` as a live migration's target; resolves with the offer as soon as the driver waits. */
  async function receive(plan: DeploymentPlan): Promise<IncomingOffer> {
    let offered!: (o: { instance: string; migration: IncomingMigration }) => void;
    const offer = new Promise<{ instance: string; migration: IncomingMigration }>((r) => (offered = r));
    const result = deps.deploy(plan, { incoming: (instance, migration) => offered({ instance, migration }) });
    const first = await Promise.race([offer, result.then(() => undefined)]);
    if (first === undefined) throw new ShoalError('internal', 'the deployment finished without waiting for a state');
    const entry = { result, migration: first.migration };
    incoming.set(first.instance, entry);
    // Nobody may collect it (a provider that went away): its failure is logged here, and
    // the entry goes once it is collected or has failed.
    result.catch((e: unknown) => {
      deps.log.warn({ instance: first.instance, err: String(e) }, 'an incoming live migration failed; the target was removed');
      setTimeout(() => incoming.get(first.instance) === entry && incoming.delete(first.instance), 60_000).unref();
    });
    return { instance: first.instance, offer: first.migration.offer };
  }

  function waiting(id: string): { result: Promise<DeploymentResult>; migration: IncomingMigration } {
    const entry = incoming.get(id);
    if (entry === undefined) throw new ShoalError('not-found', `instance ${id} is not waiting for a live migration`, { field: 'id' });
    return entry;
  }

  /** The target's deployment once its state arrived and it is ready; rejects (torn down) if it failed. */
  async function accept(id: string): Promise<DeploymentResult> {
    const entry = waiting(id);
    try {
      return await entry.result;
    } finally {
      incoming.delete(id);
    }
  }

  /** Gives the target up: its process and disks go. */
  async function abort(id: string): Promise<void> {
    const entry = waiting(id);
    incoming.delete(id);
    await entry.migration.cancel();
    await entry.result.then(
      () => undefined,
      () => undefined, // expected: cancelled (logged by receive)
    );
  }

  /** Sends the running instance `id` to `offer`; its messages stay held after success until it is removed. */
  async function send(id: string, offer: MigrationOffer): Promise<LiveMigrationResult> {
    const l = deps.store.get(id);
    const running = l.running;
    if (!running || !canMigrateLive(running)) throw notSupported(`instance ${id} runs on driver ${l.driver.name}, which cannot migrate live`);
    if (l.record.state !== 'ready') throw new ShoalError('conflict', `instance ${id} is ${l.record.state}, not ready`, { field: 'id' });
    if (deps.holds.has(id)) throw new ShoalError('conflict', `instance ${id} is held for a move already`, { field: 'id' });
    let holding: Promise<() => void> | undefined;
    const hold = async (): Promise<void> => {
      holding ??= deps.quiesce(id, QUIESCE_TIMEOUT_MS);
      await holding;
    };
    try {
      const stats = await running.migrateTo(offer, { hold });
      // The driver switched over only once the hold had resolved.
      deps.holds.keep(id, await holding!);
      return { id, ...stats };
    } catch (e) {
      // The instance runs here as before: its messages go on once none is in flight (a
      // hold that timed out has let them go already).
      holding?.then(
        (release) => release(),
        () => undefined,
      );
      throw e;
    }
  }

  /**
   * The target failed after a completed send and is gone: the instance runs here again and
   * its held messages go on to it.
   */
  async function resumeHere(id: string): Promise<void> {
    const l = deps.store.get(id);
    if (!l.running || !canMigrateLive(l.running)) throw notSupported(`instance ${id} runs on driver ${l.driver.name}, which cannot migrate live`);
    await l.running.resumeHere();
    deps.holds.release(id);
  }

  return { receive, accept, abort, send, resumeHere };
}
export type LiveMigration = ReturnType<typeof createLiveMigration>;
