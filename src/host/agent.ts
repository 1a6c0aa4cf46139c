// The instance manager: the host's half of the flow of one message (DESIGN.md, step 4).
// A composition of small parts (in instances/), each with its state passed in: the instance store,
// root preparation, the warm pool, deployment, readiness, exit handling, teardown,
// removal and recovery. This file only wires them and shuts them down in order.
import type { Driver } from './drivers/driver.ts';
import type { Admission } from './admission.ts';
import type { EventBus } from './events.ts';
import type { HostState } from './host-state.ts';
import type { LayerCache } from './layer-cache.ts';
import { silentLogger, type ImageSource, type Logger, type Mounter, type OpenImportSockets } from './ports.ts';
import { createInstanceStore, type InstanceStore, type LiveInstance, type RoutableInstance } from './instances/instance-store.ts';
import { createEndpoints } from './instances/endpoints.ts';
import { teardownInstance } from './instances/teardown.ts';
import { createExitHandler } from './instances/exit-handling.ts';
import { createRemoval } from './instances/removal.ts';
import { prepareInstanceRoot } from './instances/root-preparation.ts';
import { createWarmContainers, type WarmContainers } from './instances/warm-containers.ts';
import { createDeploy, type DeployDeps } from './instances/deploy.ts';
import { recoverInstances } from './instances/recovery.ts';
import { createLiveness, diedWithin, EXIT_REPORT_MS, livenessTargets, stopUnresponsive, type Liveness, type LivenessLimits } from './instances/liveness.ts';
import { probe } from './instances/readiness.ts';
import { setPaused, statsOf } from './instances/instance-ops.ts';
import { followLog, tailLines } from './instances/instance-log.ts';
import { createHolds, forkInstance, snapshotInstance, type SnapshotResult } from './instances/live-state.ts';
import { createLiveMigration } from './instances/live-migration.ts';
import type { StateStore } from './state-store.ts';
import type { DeploymentPlan, DeploymentResult, IncomingOffer, InstanceInfo, LiveMigrationResult, MigrationOffer, PhaseName } from '../protocol/index.ts';
import type { DriverName } from './drivers/index.ts';

export type { ImageSource, Logger, Mounter, OpenImportSockets } from './ports.ts';
export type { RoutableInstance } from './instances/instance-store.ts';
export type { SnapshotResult } from './instances/live-state.ts';
export { SOCKET_DIR_INSIDE } from './instances/instance-spec.ts';
export { waitReady } from './instances/readiness.ts';

export interface AgentOptions {
  state: HostState;
  admission: Admission;
  layerCache: LayerCache;
  events: EventBus;
  /** Drivers plans may use on this host, by name. */
  drivers: Partial<Record<DriverName, Driver>>;
  /** Drivers offered to no new plan, kept to recover (or clean up) what they ran before. */
  standbyDrivers?: Partial<Record<DriverName, Driver>>;
  defaultDriver: DriverName;
  images: ImageSource;
  mounter: Mounter;
  openImportSockets: OpenImportSockets;
  /** Route-token keys: the first signs. */
  routeKeys: Uint8Array[];
  /** The host's data-plane base URL (http://host:port). */
  dataUrl: () => string;
  tokenTtlMs?: number;
  /** Called when an instance stops being routable (drop the forwarder's connections). */
  onUnroutable?: (id: string) => void;
  onPhase?: (name: PhaseName, durationMs: number) => void;
  /**
   * Containers created ahead for recently deployed plans (drivers that can prepare):
   * perImage per plan (default 1, 0 turns it off), max in all (default 4).
   */
  warmPool?: { perImage?: number; max?: number; perTemplate?: number; maxTemplates?: number };
  /** Probing ready instances (liveness.ts); periodMs 0 turns the periodic probe off. */
  liveness?: LivenessLimits;
  logger?: Logger;
  /** Where live states go and come from (snapshot, plan.from); without it, both are refused. */
  states?: StateStore;
  /** Holds new messages to an instance at the forwarder until none is in flight (live state). */
  quiesce?: (id: string, timeoutMs: number) => Promise<() => void>;
}

export interface Agent {
  deploy(plan: DeploymentPlan): Promise<DeploymentResult>;
  list(): InstanceInfo[];
  get(id: string, options?: { stats?: boolean }): Promise<InstanceInfo>;
  remove(id: string): Promise<void>;
  /**
   * Quiesce, capture and store the instance's running state (drivers that can capture).
   * With `hold` (a move), new messages stay held after the capture until the instance is
   * removed — they are then answered `gone`, never delivered — or release(id) is called.
   */
  snapshot(id: string, options?: { hold?: boolean }): Promise<SnapshotResult>;
  /** Lets the messages held by snapshot({hold}) go on to the instance (the move was given up). */
  release(id: string): boolean;
  /** A copy of a running instance on this host; the source keeps serving. */
  fork(id: string): Promise<DeploymentResult>;
  /** Live migration, target: deploys `plan` waiting for its state; answers the offer for the source at once. */
  receive(plan: DeploymentPlan): Promise<IncomingOffer>;
  /** Live migration, target: the deployment once the state arrived and it is ready (or its failure: then torn down). */
  accept(id: string): Promise<DeploymentResult>;
  /** Live migration, target: gives up waiting; the instance is torn down. */
  abortIncoming(id: string): Promise<void>;
  /**
   * Live migration, source: sends the running instance to the offer. New messages are held
   * from just before its stop and, after success, until it is removed (answered `gone`) or
   * resumeMigrated(id) is called; on failure they go on to it, and it runs on here.
   */
  migrate(id: string, offer: MigrationOffer): Promise<LiveMigrationResult>;
  /** Live migration, source: the target failed after the move and is gone; run here again. */
  resumeMigrated(id: string): Promise<void>;
  pause(id: string): Promise<InstanceInfo>;
  resume(id: string): Promise<InstanceInfo>;
  logs(id: string, tail: number): Promise<string>;
  /** The last `tail` lines, then what follows until `signal` aborts or the instance goes. */
  followLogs(id: string, tail: number, signal: AbortSignal): AsyncIterable<string>;
  /** For the forwarder: O(1), no I/O. */
  resolve(id: string): RoutableInstance | undefined;
  /** Drops the warm pool's containers of a service, except those of keepVersion (the service was removed or superseded). */
  dropWarm(service: string, keepVersion?: string): number;
  /** What the warm pool holds. */
  warm(): Array<{ instance: string; service: DeploymentPlan['service'] }>;
  /** The forwarder could not get an answer from it: probe it now. */
  suspect(id: string): void;
  /** Re-adopt live instances from the state dir, clean up dead ones and stray mounts. */
  recover(): Promise<{ adopted: string[]; cleaned: string[] }>;
  /** Live instances' layer digests (for the report's inUse flags). */
  liveCount(): number;
  close(options?: { stopInstances?: boolean }): Promise<void>;
}

export function createAgent(options: AgentOptions): Agent {
  const { state, admission, layerCache, events, mounter } = options;
  const log = options.logger ?? silentLogger;
  const allDrivers: Partial<Record<DriverName, Driver>> = { ...options.standbyDrivers, ...options.drivers };
  const store = createInstanceStore({ state });
  const save = store.save;
  const endpoints = createEndpoints({
    routeKeys: options.routeKeys,
    dataUrl: options.dataUrl,
    ...(options.tokenTtlMs === undefined ? {} : { tokenTtlMs: options.tokenTtlMs }),
  });
  const hooks = options.onUnroutable ? { onUnroutable: options.onUnroutable } : {};
  const teardown = (l: LiveInstance): Promise<void> => teardownInstance({ mounter, admission, log }, l);
  const removal = createRemoval({ store, state, events, teardown, log, ...hooks });
  const exits = createExitHandler({ events, log, teardown, save, afterCleanup: removal.pruneDead, ...hooks });
  const rootDeps = { state, save, layerCache, mounter };
  const prepareRoot: DeployDeps['prepareRoot'] = (l, rootfs, fetchBlob, onPulled) => prepareInstanceRoot(rootDeps, l, rootfs, fetchBlob, onPulled);
  const warm = createWarmContainers({ store, state, prepareRoot, teardown, log, layers: layerCache, ...(options.warmPool ? { limits: options.warmPool } : {}) });
  const liveness = createLiveness({
    targets: () => livenessTargets(store),
    probe,
    onUnresponsive(id, why) {
      const l = store.find(id);
      if (l?.running === undefined) return;
      // A process that died is a crash, not an unresponsive instance: unless it is still
      // running, give the exit handler the time drivers take to report an exit.
      void diedWithin(l.running, EXIT_REPORT_MS).then((exited) => {
        if (!exited) return stopUnresponsive({ events, teardown, save, afterCleanup: removal.pruneDead, log, ...hooks }, l, why);
      });
    },
    log,
    ...options.liveness,
  });
  liveness.start();
  let closing = false;
  let closed: Promise<void> | undefined;
  const deploy = createDeploy({
    drivers: options.drivers,
    defaultDriver: options.defaultDriver,
    admission,
    images: options.images,
    store,
    state,
    endpoints,
    prepareRoot,
    warm,
    openImportSockets: options.openImportSockets,
    teardown,
    watchExit: exits.watch,
    events,
    log,
    isClosing: () => closing,
    ...hooks,
    ...(options.onPhase ? { onPhase: options.onPhase } : {}),
    ...(options.states ? { states: options.states } : {}),
  });
  const quiesce = options.quiesce ?? (async () => () => {});
  const liveState = { store, states: options.states, quiesce, deploy };
  const holds = createHolds();
  const migration = createLiveMigration({ store, quiesce, deploy, holds, log });
  const pauseOrResume = async (id: string, to: 'paused' | 'ready'): Promise<InstanceInfo> => {
    const l = store.get(id);
    await setPaused({ save, events }, l, to);
    return endpoints.describe(l.record);
  };

  return {
    deploy,
    list: () => store.all().map((l) => endpoints.describe(l.record)),
    async get(id, opts = {}) {
      const l = store.get(id);
      const out = endpoints.describe(l.record);
      if (opts.stats !== false && l.running && !l.exit) {
        const stats = await statsOf(l.running, id, log);
        if (stats) out.stats = stats;
      }
      return out;
    },
    async remove(id) {
      try {
        await removal.remove(id);
      } finally {
        // Held messages now find no instance: answered `gone` (never delivered).
        holds.release(id);
      }
    },
    snapshot: (id, opts = {}) => snapshotInstance(liveState, id, opts.hold ? { hold: holds } : {}),
    release: (id) => holds.release(id),
    fork: (id) => forkInstance(liveState, id),
    receive: migration.receive,
    accept: migration.accept,
    abortIncoming: migration.abort,
    migrate: migration.send,
    resumeMigrated: migration.resumeHere,
    pause: (id) => pauseOrResume(id, 'paused'),
    resume: (id) => pauseOrResume(id, 'ready'),
    logs: async (id, tail) => tailLines(store.get(id).paths.logFile, tail),
    followLogs: (id, tail, signal) => followLog(store.get(id).paths.logFile, tail, signal),
    resolve: store.resolve,
    suspect: (id) => liveness.suspect(id),
    dropWarm: (service, keepVersion) => warm.drop(service, keepVersion),
    warm: () => warm.list(),
    recover: () =>
      recoverInstances({ state, store, drivers: allDrivers, mounter, admission, layerCache, openImportSockets: options.openImportSockets, teardown, watchExit: exits.watch, log }),
    liveCount: store.routableCount,
    close(opts = {}) {
      closing = true;
      holds.releaseAll();
      closed ??= closeAgent({ store, warm, liveness, remove: removal.remove, drivers: allDrivers, log }, opts.stopInstances ?? true);
      return closed;
    },
  };
}

interface CloseDeps {
  store: InstanceStore;
  warm: Pick<WarmContainers, 'close'>;
  liveness: Pick<Liveness, 'close'>;
  remove(id: string): Promise<void>;
  drivers: Partial<Record<DriverName, Driver>>;
  log: Logger;
}

async function closeAgent(deps: CloseDeps, stopInstances: boolean): Promise<void> {
  await deps.liveness.close();
  await deps.warm.close();
  const all = deps.store.all();
  if (stopInstances) {
    // Deployments in progress see `closing` and fail; wait for them to clean up.
    const results = await Promise.allSettled(
      all.map(async (l) => {
        if (l.record.state === 'starting') await waitUntil(() => !deps.store.has(l.record.id), 15_000);
        else await deps.remove(l.record.id);
      }),
    );
    results.forEach((r, i) => {
      if (r.status === 'rejected') deps.log.error({ instance: all[i]!.record.id, err: String(r.reason) }, 'removing an instance at shutdown failed');
    });
  } else {
    // Leave them running for the next host process to re-adopt; only host-side parts go.
    for (const l of all) {
      await Promise.resolve(l.imports?.close()).catch((e: unknown) => deps.log.warn({ instance: l.record.id, err: String(e) }, 'closing import sockets failed'));
      l.imports = undefined;
    }
    deps.store.clear();
  }
  for (const d of new Set(Object.values(deps.drivers))) {
    await d.close().catch((e: unknown) => deps.log.warn({ driver: d.name, err: String(e) }, 'closing the driver failed'));
  }
}

async function waitUntil(cond: () => boolean, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
}

