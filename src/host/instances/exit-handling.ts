// Exit handling: what happens when an instance's process ends. An exit we asked for is
// only told; an unexpected one takes the instance out of the routable set at once, is
// told (exited, crashed or oom), and then frees what it held — unless a deployment is
// still starting it, which sees the exit and cleans up itself.
import type { InstanceExit, RunningInstance } from '../drivers/driver.ts';
import type { EventBus } from '../events.ts';
import type { InstanceExitRecord } from '../host-state.ts';
import { watchDiskFull } from '../drivers/shared/disk-watch.ts';
import { emitFor, type LiveInstance } from './instance-store.ts';
import type { Logger } from '../ports.ts';
import type { InstanceState } from '../../protocol/index.ts';
import { ShoalError } from '../../protocol/index.ts';

export interface ExitHandlerDeps {
  events: Pick<EventBus, 'emit'>;
  log: Logger;
  teardown(l: LiveInstance): Promise<void>;
  save(l: LiveInstance): Promise<void>;
  /** Called once the ended instance is torn down and saved. */
  afterCleanup(): void;
  /** The instance stops being routable (drop the forwarder's connections). */
  onUnroutable?: (id: string) => void;
}

export interface ExitHandler {
  /** Handles the instance's exit when `running.exited` settles. */
  watch(l: LiveInstance, running: RunningInstance): void;
  onExit(l: LiveInstance, exit: InstanceExit, message?: string): void;
}

export function createExitHandler(deps: ExitHandlerDeps): ExitHandler {
  const onExit = (l: LiveInstance, exit: InstanceExit, message?: string): void => {
    l.exit = exit;
    const was = l.record.state;
    l.record.exit = exitRecord(exit);
    const extra = { ...detailOf(exit), ...(message ? { message } : {}) };
    if (l.stopping) {
      emitFor(deps.events, l, 'exited', extra);
      return; // remove() / close() finishes the job
    }
    const next = stateAfter(exit);
    l.record.state = next;
    deps.onUnroutable?.(l.record.id);
    emitFor(deps.events, l, next, extra);
    deps.log.warn({ instance: l.record.id, exit }, `instance ${next}`);
    if (was === 'starting') return; // the deployment in progress sees the exit and cleans up
    void cleanUp(deps, l);
  };
  return {
    watch(l, running) {
      if (l.record.mounted) {
        const stopDisk = watchDiskFull(l.paths.rootfs, () => emitFor(deps.events, l, 'instance-disk-full'), (e) =>
          deps.log.warn({ instance: l.record.id, err: String(e) }, 'cannot read the root layer usage'),
        );
        void running.exited.finally(stopDisk);
      }
      running.exited.then(
        (exit) => onExit(l, exit),
        (err) => onExit(l, { reason: 'crashed', code: undefined, signal: undefined, at: Date.now() }, String(err)),
      );
    },
    onExit,
  };
}

async function cleanUp(deps: ExitHandlerDeps, l: LiveInstance): Promise<void> {
  const instance = l.record.id;
  try {
    await deps.teardown(l);
  } catch (e) {
    deps.log.error({ instance, err: String(e) }, 'cleanup after an exit was incomplete');
  }
  try {
    await deps.save(l);
  } catch (e) {
    deps.log.error({ instance, err: String(e) }, 'saving the exit failed');
  }
  deps.afterCleanup();
}

/** The state an unexpected exit leaves: a clean exit, an oom kill, or a crash. */
export function stateAfter(exit: InstanceExit): Extract<InstanceState, 'oom' | 'exited' | 'crashed'> {
  if (exit.reason === 'oom') return 'oom';
  return exit.reason === 'exited' && exit.code === 0 ? 'exited' : 'crashed';
}

export function exitRecord(exit: InstanceExit): InstanceExitRecord {
  return { reason: exit.reason, at: exit.at, ...detailOf(exit) };
}

function detailOf(exit: InstanceExit): { code?: number; signal?: string } {
  return { ...(exit.code === undefined ? {} : { code: exit.code }), ...(exit.signal === undefined ? {} : { signal: exit.signal }) };
}

export function describeExit(exit: InstanceExit): string {
  const parts: string[] = [exit.reason];
  if (exit.code !== undefined) parts.push(`code ${exit.code}`);
  if (exit.signal !== undefined) parts.push(`signal ${exit.signal}`);
  return parts.join(', ');
}

export function exitedEarly(exit: InstanceExit, detail?: unknown): ShoalError {
  return new ShoalError('unavailable', `instance exited before it was ready (${describeExit(exit)})`, detail === undefined ? {} : { detail });
}
