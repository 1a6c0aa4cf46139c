// The live instances of this host and their durable records. An entry holds what the
// instance has taken (reservation, layer lease, import sockets, the running process);
// its record is what survives a restart (host-state.ts). The forwarder reads it in O(1).
import type { Driver, InstanceExit, RunningInstance } from '../drivers/driver.ts';
import type { Reservation } from '../admission.ts';
import type { EventBus } from '../events.ts';
import type { HostState, InstancePaths, InstanceRecord } from '../host-state.ts';
import type { PreparedRoot } from '../layer-cache.ts';
import type { ImportSockets } from '../ports.ts';
import type { DeploymentPlan, HostEventType, InstanceState } from '../../protocol/index.ts';
import type { DriverName } from '../drivers/index.ts';
import { ShoalError } from '../../protocol/index.ts';

export interface LiveInstance {
  record: InstanceRecord;
  paths: InstancePaths;
  driver: Driver;
  running: RunningInstance | undefined;
  reservation: Reservation | undefined;
  lease: PreparedRoot | undefined;
  imports: ImportSockets | undefined;
  /** We asked it to stop: its exit is expected. */
  stopping: boolean;
  exit: InstanceExit | undefined;
  teardown: Promise<void> | undefined;
  removal: Promise<void> | undefined;
}

/** What the forwarder needs of an instance. */
export interface RoutableInstance {
  socketPath: string;
  state: 'ready' | 'paused' | 'starting' | 'stopping';
}

const ROUTABLE: ReadonlySet<InstanceState> = new Set(['ready', 'paused', 'starting', 'stopping']);

export function isRoutable(state: InstanceState): state is RoutableInstance['state'] {
  return ROUTABLE.has(state);
}

export interface InstanceStore {
  /** A new entry with nothing held yet (not added). */
  entry(record: InstanceRecord, driver: Driver, running?: RunningInstance): LiveInstance;
  add(l: LiveInstance): void;
  find(id: string): LiveInstance | undefined;
  /** Throws not-found. */
  get(id: string): LiveInstance;
  has(id: string): boolean;
  delete(id: string): void;
  all(): LiveInstance[];
  /** Forgets every entry (they now belong to whichever agent recovers them next). */
  clear(): void;
  /** Writes the record (stamped with updatedAt). */
  save(l: LiveInstance): Promise<void>;
  /** For the forwarder: O(1), no I/O. */
  resolve(id: string): RoutableInstance | undefined;
  routableCount(): number;
}

export function createInstanceStore(options: { state: Pick<HostState, 'paths' | 'write'>; now?: () => number }): InstanceStore {
  const { state } = options;
  const now = options.now ?? Date.now;
  const live = new Map<string, LiveInstance>();
  const get = (id: string): LiveInstance => {
    const l = live.get(id);
    if (!l) throw new ShoalError('not-found', `no instance ${JSON.stringify(id)} on this host`, { field: 'id' });
    return l;
  };
  return {
    entry: (record, driver, running) => ({
      record,
      paths: state.paths(record.id),
      driver,
      running,
      reservation: undefined,
      lease: undefined,
      imports: undefined,
      stopping: false,
      exit: undefined,
      teardown: undefined,
      removal: undefined,
    }),
    add: (l) => void live.set(l.record.id, l),
    find: (id) => live.get(id),
    get,
    has: (id) => live.has(id),
    delete: (id) => void live.delete(id),
    all: () => [...live.values()],
    clear: () => live.clear(),
    async save(l) {
      l.record.updatedAt = now();
      await state.write(l.record);
    },
    resolve(id) {
      const l = live.get(id);
      if (!l || !isRoutable(l.record.state)) return undefined;
      return { socketPath: l.paths.socketPath, state: l.record.state };
    },
    routableCount() {
      let n = 0;
      for (const l of live.values()) if (isRoutable(l.record.state)) n++;
      return n;
    },
  };
}

/** The record of an instance about to start. */
export function newRecord(id: string, plan: DeploymentPlan, driver: DriverName, createdAt: number): InstanceRecord {
  return {
    id,
    plan,
    driver,
    state: 'starting',
    createdAt,
    updatedAt: createdAt,
    rootfs: undefined,
    rootPath: undefined,
    mounted: false,
    timeline: undefined,
    exit: undefined,
  };
}

export function emitFor(
  events: Pick<EventBus, 'emit'>,
  l: LiveInstance,
  type: HostEventType,
  extra: { code?: number; signal?: string; message?: string } = {},
): void {
  events.emit({ type, instance: l.record.id, service: l.record.plan.service.name, ...extra });
}
