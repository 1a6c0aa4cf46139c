// Teardown: release everything an instance holds except its record and log — stop it,
// destroy the driver's state, close its import sockets, unmount its root, remove its
// directories, return its layer lease and its reservation. Every step runs even when an
// earlier one failed; the failures are logged and reported together. Idempotent.
import { rm } from 'node:fs/promises';
import { isPausable, type RunningInstance } from '../drivers/driver.ts';
import type { Admission } from '../admission.ts';
import type { LiveInstance } from './instance-store.ts';
import type { Logger, Mounter } from '../ports.ts';
import { ShoalError } from '../../protocol/index.ts';

export interface TeardownDeps {
  mounter: Pick<Mounter, 'unmountOverlay' | 'listMounts'>;
  admission: Pick<Admission, 'release'>;
  log: Logger;
}

/** The same promise for every call on one instance. */
export function teardownInstance(deps: TeardownDeps, l: LiveInstance): Promise<void> {
  l.teardown ??= runTeardown(deps, l);
  return l.teardown;
}

type Step = (what: string, fn: () => Promise<unknown> | unknown) => Promise<void>;

async function runTeardown(deps: TeardownDeps, l: LiveInstance): Promise<void> {
  const errors: unknown[] = [];
  const step: Step = async (what, fn) => {
    try {
      await fn();
    } catch (e) {
      errors.push(e);
      deps.log.error({ instance: l.record.id, err: String(e) }, `cleanup: ${what} failed`);
    }
  };
  const running = l.running;
  if (running && !l.exit) {
    l.stopping = true;
    await step('stop', () => stopRunning(deps, l, running));
  }
  await step('driver destroy', () => l.driver.destroy(l.record.id, l.paths.stateDir));
  await step('close import sockets', () => l.imports?.close());
  l.imports = undefined;
  if (l.record.mounted) {
    await step('unmount', async () => {
      await deps.mounter.unmountOverlay(l.paths.rootfs);
      l.record.mounted = false;
    });
  }
  await removeDirs(deps, l, step, errors);
  l.lease?.release();
  l.lease = undefined;
  if (l.reservation) deps.admission.release(l.reservation);
  l.reservation = undefined;
  if (errors.length > 0) throw new ShoalError('internal', `cleanup of ${l.record.id} was incomplete: ${errors.map(String).join('; ')}`);
}

async function stopRunning(deps: TeardownDeps, l: LiveInstance, running: RunningInstance): Promise<void> {
  if (isPausable(running) && l.record.state === 'paused') {
    // A frozen instance cannot handle its stop signal; stop() below kills it if this failed.
    await running.resume().catch((e: unknown) => deps.log.warn({ instance: l.record.id, err: String(e) }, 'cleanup: resuming before stop failed'));
  }
  await running.stop({ graceMs: 2000 });
}

/** What is still mounted under the instance dir must not be recursed into. */
async function removeDirs(deps: TeardownDeps, l: LiveInstance, step: Step, errors: unknown[]): Promise<void> {
  let stillMounted: string[];
  try {
    stillMounted = await deps.mounter.listMounts(l.paths.dir);
  } catch (e) {
    deps.log.error({ instance: l.record.id, err: String(e) }, 'cleanup: cannot list mounts; leaving the instance dir in place');
    stillMounted = [l.paths.dir];
  }
  if (stillMounted.length > 0) {
    errors.push(new Error(`still mounted: ${stillMounted.join(', ')}`));
    return;
  }
  for (const d of [l.paths.upper, l.paths.work, l.paths.rootfs, l.paths.socketDir, l.paths.stateDir]) {
    await step(`remove ${d}`, () => rm(d, { recursive: true, force: true, maxRetries: 3 }));
  }
}
