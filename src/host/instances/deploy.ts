// One deployment, the host's half of the flow of one message (DESIGN.md, step 4):
// admit → resolve the image → take a warm container, or prepare the root (pull, unpack,
// mount) → open import sockets → driver.start → wait until it answers → endpoint.
// Each phase goes into the timeline. A failure at any point tears down what was taken,
// so a refused or failed deployment leaves nothing behind.
import { canFork, canReceiveLive, canRestore, type Driver, type IncomingMigration, type InstanceSpec, type RunningInstance } from '../drivers/driver.ts';
import { mkdir, rm } from 'node:fs/promises';
import type { StateStore } from '../state-store.ts';
import type { Admission } from '../admission.ts';
import type { EventBus } from '../events.ts';
import type { HostState } from '../host-state.ts';
import { newInstanceId } from '../host-state.ts';
import type { BlobFetcher, PreparedRoot } from '../layer-cache.ts';
import type { Endpoints } from './endpoints.ts';
import { emitFor, newRecord, type InstanceStore, type LiveInstance } from './instance-store.ts';
import type { ImageSource, Logger, OpenImportSockets } from '../ports.ts';
import type { PreparedInstance } from './root-preparation.ts';
import type { WarmContainer, WarmContainers } from './warm-containers.ts';
import { exitedEarly } from './exit-handling.ts';
import { DEFAULT_READY_TIMEOUT_MS, waitReady } from './readiness.ts';
import { tailLines } from './instance-log.ts';
import type { DeploymentPlan, DeploymentResult, DeploymentTimeline, PhaseName, TimelinePhase, RootfsSpec } from '../../protocol/index.ts';
import { isDriverName, type DriverName } from '../drivers/index.ts';
import { ShoalError, isShoalError } from '../../protocol/index.ts';

const LOG_TAIL_LINES = 40;

export interface DeployDeps {
  /** Drivers plans may use, by name. */
  drivers: Partial<Record<DriverName, Driver>>;
  defaultDriver: DriverName;
  admission: Pick<Admission, 'reserve' | 'release' | 'adopt'>;
  images: ImageSource;
  store: Pick<InstanceStore, 'entry' | 'add' | 'delete' | 'save'>;
  state: Pick<HostState, 'remove'>;
  endpoints: Endpoints;
  prepareRoot(l: LiveInstance, rootfs: RootfsSpec, fetchBlob: BlobFetcher, onPulled?: (lease: PreparedRoot) => void): Promise<PreparedInstance>;
  warm: Pick<WarmContainers, 'take' | 'refill'> & Partial<Pick<WarmContainers, 'takeTemplate'>>;
  openImportSockets: OpenImportSockets;
  teardown(l: LiveInstance): Promise<void>;
  watchExit(l: LiveInstance, running: RunningInstance): void;
  events: Pick<EventBus, 'emit'>;
  log: Logger;
  isClosing(): boolean;
  onUnroutable?: (id: string) => void;
  onPhase?: (name: PhaseName, durationMs: number) => void;
  /** Where plans' `from` states are pulled from (live state). */
  states?: Pick<StateStore, 'pull'>;
}

/**
 * How the instance begins: the image's start (default), a plan's `from` state, a fork of a
 * running instance, or the target of a live migration (its state arrives from another host).
 */
export type Origin =
  | {
      fork: RunningInstance;
      /** Quiesces the source while its state is copied; the result lets its messages go. */
      hold?: () => Promise<() => void>;
      incoming?: undefined;
    }
  | {
      fork?: undefined;
      /** Called once the driver waits for the state: the offer goes to the source (via the provider). */
      incoming(instance: string, migration: IncomingMigration): void;
    }
  | undefined;

/** The phases of one deployment, relative to its start (performance.now() times). */
export interface Timeline {
  readonly t0: number;
  readonly phases: TimelinePhase[];
  add(name: PhaseName, start: number, end: number): void;
  rel(t: number): number;
}

export function createTimeline(onPhase?: (name: PhaseName, durationMs: number) => void, t0 = performance.now()): Timeline {
  const phases: TimelinePhase[] = [];
  const rel = (t: number): number => Math.round((t - t0) * 100) / 100;
  return {
    t0,
    phases,
    rel,
    add(name, start, end) {
      phases.push({ name, startMs: rel(start), endMs: rel(end) });
      onPhase?.(name, end - start);
    },
  };
}

export function createDeploy(deps: DeployDeps): (plan: DeploymentPlan, origin?: Origin) => Promise<DeploymentResult> {
  return async (plan, origin) => {
    if (deps.isClosing()) throw new ShoalError('unavailable', 'the host is shutting down');
    const timeline = createTimeline(deps.onPhase);
    const startedAt = Date.now();
    const driver = driverFor(deps.drivers, plan.driver ?? deps.defaultDriver);
    if (plan.listen !== undefined && driver.capabilities.servesPort !== true) {
      throw new ShoalError('unsupported', `the ${driver.name} driver cannot run a program that listens on TCP $PORT (listen.port); use runc or process`, { field: 'listen' });
    }
    if (plan.from !== undefined && !canRestore(driver)) {
      throw new ShoalError('unsupported', `driver ${driver.name} cannot start from a captured state`, { field: 'from', detail: { reason: 'not-supported' } });
    }
    if (origin?.fork && !canFork(driver)) throw new ShoalError('unsupported', `driver ${driver.name} cannot fork instances`, { field: 'id', detail: { reason: 'not-supported' } });
    if (origin?.incoming && (!canReceiveLive(driver) || plan.from !== undefined)) {
      throw new ShoalError('unsupported', `driver ${driver.name} cannot receive a live migration`, { field: 'driver', detail: { reason: 'not-supported' } });
    }
    let l = admit(deps, plan, driver, startedAt);
    const tAdmit = performance.now();
    timeline.add('admit', timeline.t0, tAdmit);
    try {
      const { rootfs, fetchBlob } = await deps.images.resolve(plan.store, plan.image);
      // A state or a fork needs its own start: no container made ahead for the image's. Else
      // this plan's own container, else one made for its image's template (a first
      // deployment) — but not for a program on TCP $PORT, whose first process is the bridge.
      const fresh = plan.from === undefined && origin === undefined;
      const hit = fresh
        ? (deps.warm.take(driver, plan, rootfs) ?? (plan.listen === undefined ? await deps.warm.takeTemplate?.(driver, plan, rootfs, fetchBlob) : undefined))
        : undefined;
      let prepared: Pick<PreparedInstance, 'spec' | 'user'>;
      if (hit) {
        l = takeOver(deps, l, hit, startedAt);
        await deps.store.save(l);
        prepared = hit;
        const t = performance.now();
        for (const name of ['pull', 'unpack'] as const) timeline.add(name, tAdmit, t);
        // A template container gets the service's own layers now.
        if (hit.attach) await hit.attach();
        const tMounted = performance.now();
        timeline.add('mount', t, tMounted);
        timeline.add('create', tMounted, tMounted);
      } else {
        prepared = await prepareCold(deps, l, rootfs, fetchBlob, timeline, tAdmit);
      }
      const tReady = await startAndWait(deps, l, prepared, timeline, !hit, origin);
      const pull = hit ? (hit.pull ?? { bytes: 0, layersFetched: 0, layersCached: rootfs.layers.length }) : l.lease!.stats;
      const done: DeploymentTimeline = { startedAt, phases: timeline.phases, pull, totalMs: timeline.rel(tReady) };
      l.record.timeline = done;
      l.record.state = 'ready';
      await deps.store.save(l);
      emitFor(deps.events, l, 'ready');
      deps.log.info({ instance: l.record.id, service: plan.service.name, totalMs: done.totalMs, warm: hit !== undefined }, 'instance ready');
      deps.warm.refill(driver, plan, rootfs, fetchBlob);
      return { endpoint: deps.endpoints.endpointFor(l.record), timeline: done, instance: deps.endpoints.describe(l.record) };
    } catch (err) {
      throw await undo(deps, l, err);
    }
  };
}

export function driverFor(drivers: Partial<Record<DriverName, Driver>>, name: string): Driver {
  const d = isDriverName(name) ? drivers[name] : undefined;
  if (!d) {
    const have = Object.keys(drivers).join(', ') || 'none';
    throw new ShoalError('unsupported', `driver ${name} is not available on this host (available: ${have})`, { field: 'driver' });
  }
  return d;
}

/** Reserves room and registers the instance as starting; refused → conflict. */
function admit(deps: DeployDeps, plan: DeploymentPlan, driver: Driver, startedAt: number): LiveInstance {
  const id = newInstanceId(plan.service.name);
  const admitted = deps.admission.reserve(id, { memoryMb: plan.resources.memoryMb, cpuMillis: plan.resources.cpuMillis });
  if (!admitted.ok) throw new ShoalError('conflict', `refused: ${admitted.reason}`, { detail: { reason: admitted.reason } });
  const l = deps.store.entry(newRecord(id, plan, driver.name as DriverName, startedAt), driver);
  l.reservation = admitted.reservation;
  deps.store.add(l);
  return l;
}

/** A container created ahead for this very plan takes over the deployment's identity. */
function takeOver(deps: DeployDeps, l: LiveInstance, hit: WarmContainer, startedAt: number): LiveInstance {
  const w = hit.live;
  const plan = l.record.plan;
  deps.store.delete(l.record.id);
  deps.admission.release(l.reservation!);
  w.reservation = deps.admission.adopt(w.record.id, { memoryMb: plan.resources.memoryMb, cpuMillis: plan.resources.cpuMillis });
  w.record.plan = plan;
  w.record.createdAt = startedAt;
  deps.store.add(w);
  return w;
}

async function prepareCold(
  deps: DeployDeps,
  l: LiveInstance,
  rootfs: RootfsSpec,
  fetchBlob: BlobFetcher,
  timeline: Timeline,
  tAdmit: number,
): Promise<PreparedInstance> {
  let tPulled = tAdmit;
  let lease: PreparedRoot | undefined;
  const prepared = await deps.prepareRoot(l, rootfs, fetchBlob, (x) => {
    tPulled = performance.now();
    lease = x;
  });
  const { pull, unpack } = lease!.timings;
  timeline.add('pull', tAdmit, pull ? pull[1] : tPulled);
  if (unpack) timeline.add('unpack', unpack[0], unpack[1]);
  else timeline.add('unpack', tPulled, tPulled);
  timeline.add('mount', prepared.mountStart, prepared.mountEnd);
  return prepared;
}

/** Import sockets, start, readiness; returns when it answered. */
async function startAndWait(
  deps: DeployDeps,
  l: LiveInstance,
  prepared: { spec: InstanceSpec; user: { uid: number; gid: number } },
  timeline: Timeline,
  timeCreate: boolean,
  origin?: Origin,
): Promise<number> {
  const plan = l.record.plan;
  const tCreate = performance.now();
  if (plan.imports && plan.imports.length > 0) {
    l.imports = await deps.openImportSockets(l.paths.importsDir, plan.imports, { uid: prepared.user.uid, gid: prepared.user.gid });
  }
  const tCreated = performance.now();
  if (timeCreate) timeline.add('create', tCreate, tCreated);

  const running = await begin(deps, l, prepared.spec, origin);
  l.running = running;
  deps.watchExit(l, running);
  const tStarted = performance.now();
  timeline.add('start', tCreated, tStarted);
  emitFor(deps.events, l, 'started');

  const timeoutMs = plan.readiness?.timeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
  await waitReady(l.paths.socketPath, plan.readiness?.path ?? '/healthz', timeoutMs, running.exited, deps.isClosing);
  const tReady = performance.now();
  timeline.add('ready', tStarted, tReady);
  if (l.exit) throw exitedEarly(l.exit);
  return tReady;
}

/** The driver's start, restore (plan.from), fork, or live migration's receive. */
async function begin(deps: DeployDeps, l: LiveInstance, spec: InstanceSpec, origin: Origin): Promise<RunningInstance> {
  const driver = l.driver;
  const plan = l.record.plan;
  if (origin?.fork && canFork(driver)) {
    const release = origin.hold ? await origin.hold() : () => {};
    try {
      return await driver.fork(origin.fork, spec);
    } finally {
      release();
    }
  }
  if (origin?.incoming && canReceiveLive(driver)) {
    const migration = await driver.receive(spec);
    origin.incoming(l.record.id, migration);
    return migration.instance;
  }
  if (plan.from !== undefined && canRestore(driver)) {
    if (!deps.states) throw new ShoalError('unsupported', 'this host has no state store', { field: 'from' });
    await mkdir(l.paths.stateDir, { recursive: true });
    const state = await deps.states.pull(plan.store, plan.image, plan.from, l.paths.stateDir);
    try {
      return await driver.restore(spec, state);
    } finally {
      await rm(state.file, { force: true });
    }
  }
  return driver.start(spec);
}

/** Tears down what the failed deployment took; the error to throw carries the log tail. */
async function undo(deps: DeployDeps, l: LiveInstance, err: unknown): Promise<ShoalError> {
  const id = l.record.id;
  const exitedFirst = l.exit; // before teardown stops it, which sets l.exit too
  const tail = await tailLines(l.paths.logFile, LOG_TAIL_LINES).catch((e: unknown) => {
    deps.log.warn({ instance: id, err: String(e) }, 'reading the log of a failed deployment failed');
    return '';
  });
  deps.onUnroutable?.(id);
  await deps.teardown(l).catch((e: unknown) => deps.log.error({ instance: id, err: String(e) }, 'cleanup after a failed deployment'));
  deps.store.delete(id);
  await deps.state.remove(id).catch((e: unknown) => deps.log.error({ instance: id, err: String(e) }, 'removing the dir of a failed deployment failed'));
  if (exitedFirst) return exitedEarly(exitedFirst, { log: tail, exit: exitedFirst });
  const base = isShoalError(err) ? err : new ShoalError('internal', `deployment failed: ${String((err as Error)?.message ?? err)}`, { cause: err });
  return new ShoalError(base.code, base.message, {
    ...(base.field === undefined ? {} : { field: base.field }),
    detail: { ...(typeof base.detail === 'object' && base.detail !== null ? base.detail : {}), log: tail },
    cause: err,
  });
}
