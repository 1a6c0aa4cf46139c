// Removal: an instance leaves the routable set, is torn down (twice if need be: a busy
// mount may have let go by the second try), its directory goes and it is forgotten.
// Ended instances stay (state, exit, log) until deleted; past a limit the oldest go.
import type { EventBus } from '../events.ts';
import type { HostState } from '../host-state.ts';
import { emitFor, isRoutable, type InstanceStore, type LiveInstance } from './instance-store.ts';
import type { Logger } from '../ports.ts';
import { ShoalError } from '../../protocol/index.ts';

/** Ended instances kept for their state and log until deleted. */
export const KEEP_DEAD = 100;

export interface RemovalDeps {
  store: Pick<InstanceStore, 'get' | 'delete' | 'all'>;
  state: Pick<HostState, 'remove'>;
  events: Pick<EventBus, 'emit'>;
  teardown(l: LiveInstance): Promise<void>;
  log: Logger;
  onUnroutable?: (id: string) => void;
  keepDead?: number;
}

export interface Removal {
  remove(id: string): Promise<void>;
  /** Removes the oldest ended instances past the limit, in the background. */
  pruneDead(): void;
}

export function createRemoval(deps: RemovalDeps): Removal {
  const remove = (id: string): Promise<void> => {
    const l = deps.store.get(id);
    if (l.record.state === 'starting') {
      return Promise.reject(new ShoalError('conflict', `instance ${id} is still starting; delete it once it is ready or failed`));
    }
    l.removal ??= removeOnce(deps, l);
    return l.removal;
  };
  return {
    remove,
    pruneDead() {
      for (const x of deadToPrune(deps.store.all(), deps.keepDead ?? KEEP_DEAD)) {
        remove(x.record.id).catch((e: unknown) => deps.log.error({ instance: x.record.id, err: String(e) }, 'removing an old ended instance failed'));
      }
    },
  };
}

async function removeOnce(deps: RemovalDeps, l: LiveInstance): Promise<void> {
  const id = l.record.id;
  if (isRoutable(l.record.state)) {
    l.record.state = 'stopping';
    l.stopping = true;
  }
  deps.onUnroutable?.(id);
  try {
    await deps.teardown(l);
  } catch (e) {
    deps.log.warn({ instance: id, err: String(e) }, 'cleanup incomplete; trying once more');
    l.teardown = undefined;
    await deps.teardown(l);
  }
  await deps.state.remove(id);
  deps.store.delete(id);
  emitFor(deps.events, l, 'removed');
}

/** The ended instances (not being removed) past the newest `keep`, oldest first. */
export function deadToPrune(all: LiveInstance[], keep: number): LiveInstance[] {
  const dead = all.filter((x) => !isRoutable(x.record.state) && !x.removal);
  dead.sort((a, b) => (a.exit?.at ?? 0) - (b.exit?.at ?? 0));
  return dead.slice(0, Math.max(0, dead.length - keep));
}
