// Operations on one running instance: pause and resume (drivers that can freeze), and
// its resource use for the instance's description.
import { isPausable, type RunningInstance } from '../drivers/driver.ts';
import type { EventBus } from '../events.ts';
import { emitFor, type LiveInstance } from './instance-store.ts';
import type { Logger } from '../ports.ts';
import type { InstanceInfo } from '../../protocol/index.ts';
import { ShoalError } from '../../protocol/index.ts';

export interface PauseDeps {
  save(l: LiveInstance): Promise<void>;
  events: Pick<EventBus, 'emit'>;
}

/** ready → paused or paused → ready; already there is a no-op; anything else is a conflict. */
export async function setPaused(deps: PauseDeps, l: LiveInstance, to: 'paused' | 'ready'): Promise<void> {
  const running = l.running;
  const from = to === 'paused' ? 'ready' : 'paused';
  if (l.record.state === to) return;
  if (l.record.state !== from || !running) {
    throw new ShoalError('conflict', `instance ${l.record.id} is ${l.record.state}; it can be ${to === 'paused' ? 'paused when ready' : 'resumed when paused'}`);
  }
  if (!isPausable(running) || !l.driver.capabilities.canPause) {
    throw new ShoalError('unsupported', `driver ${l.driver.name} cannot pause instances`);
  }
  if (to === 'paused') await running.pause();
  else await running.resume();
  l.record.state = to;
  await deps.save(l);
  emitFor(deps.events, l, to === 'paused' ? 'paused' : 'resumed');
}

/** Resource use, best effort: an instance that cannot say (it is just exiting) has none. */
export async function statsOf(running: RunningInstance, id: string, log: Logger): Promise<InstanceInfo['stats']> {
  try {
    const s = await running.stats();
    return {
      ...(s.memoryBytes === undefined ? {} : { memoryBytes: s.memoryBytes }),
      ...(s.cpuUsageNanos === undefined ? {} : { cpuUsageNanos: s.cpuUsageNanos }),
      ...(s.pids === undefined ? {} : { pids: s.pids }),
    };
  } catch (e) {
    log.warn({ instance: id, err: String(e) }, 'reading instance stats failed');
    return undefined;
  }
}
