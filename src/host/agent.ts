// The instance manager: the host's half of the flow of one message (DESIGN.md, step 4).
// admit → pull the missing layers → unpack → mount the root copy-on-write → create the
// socket directory and import sockets → driver.start → wait for GET /healthz → endpoint.
// Every step registers its undo; a failure at any point runs them all, so a refused or
// failed deployment leaves nothing behind (reservation, mount, upper dir, container).
import { request as httpRequest } from 'node:http';
import { open, readdir, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Driver, InstanceExit, RunningInstance, InstanceSpec } from './drivers/driver.ts';
import { boundsRoot, canPrepare, idMappingOf, isPausable } from './drivers/driver.ts';
import { watchDiskFull } from './drivers/shared/disk-watch.ts';
import type { Admission, Reservation } from './admission.ts';
import type { EventBus } from './events.ts';
import type { HostState, InstancePaths, InstanceRecord } from './host-state.ts';
import { newInstanceId } from './host-state.ts';
import type { BlobFetcher, CacheMode, LayerCache, PreparedRoot } from './layer-cache.ts';
import { signRouteToken } from './data-plane/route-token.ts';
import type {
  DeploymentPlan,
  DeploymentResult,
  DeploymentTimeline,
  DriverName,
  EndpointReference,
  InstanceInfo,
  InstanceState,
  PhaseName,
  TimelinePhase,
} from '../protocol/deployment.ts';
import type { RootfsSpec } from '../protocol/oci.ts';
import { ShoalError, isShoalError } from '../protocol/errors.ts';

/** Where the instance's socket directory appears inside its root. */
export const SOCKET_DIR_INSIDE = '/run/shoal';

export interface Logger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface ImageSource {
  /** Turns the plan's image reference into what to run, and a way to fetch its layers. */
  resolve(store: string, image: string): Promise<{ rootfs: RootfsSpec; fetchBlob: BlobFetcher }>;
}

export interface Mounter {
  mountOverlay(options: {
    lowerDirs: string[];
    upperDir: string;
    workDir: string;
    target: string;
    sizeBytes?: number | undefined;
    idmap?: { hostId: number; count: number } | undefined;
  }): Promise<void>;
  unmountOverlay(target: string): Promise<void>;
  /** Mount points at or below `under`. */
  listMounts(under: string): Promise<string[]>;
}

export type OpenImportSockets = (
  dir: string,
  bindings: Array<{ name: string; url: string; token?: string }>,
  options: { uid?: number; gid?: number },
) => Promise<{ close(): Promise<void> | void }>;

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
  warmPool?: { perImage?: number; max?: number };
  logger?: Logger;
}

/** What the forwarder needs of an instance. */
export interface RoutableInstance {
  socketPath: string;
  state: 'ready' | 'paused' | 'starting' | 'stopping';
}

export interface Agent {
  deploy(plan: DeploymentPlan): Promise<DeploymentResult>;
  list(): InstanceInfo[];
  get(id: string, options?: { stats?: boolean }): Promise<InstanceInfo>;
  remove(id: string): Promise<void>;
  pause(id: string): Promise<InstanceInfo>;
  resume(id: string): Promise<InstanceInfo>;
  logs(id: string, tail: number): Promise<string>;
  /** For the forwarder: O(1), no I/O. */
  resolve(id: string): RoutableInstance | undefined;
  /** Re-adopt live instances from the state dir, clean up dead ones and stray mounts. */
  recover(): Promise<{ adopted: string[]; cleaned: string[] }>;
  /** Live instances' layer digests (for the report's inUse flags). */
  liveCount(): number;
  close(options?: { stopInstances?: boolean }): Promise<void>;
}

interface Live {
  record: InstanceRecord;
  paths: InstancePaths;
  driver: Driver;
  running: RunningInstance | undefined;
  reservation: Reservation | undefined;
  lease: PreparedRoot | undefined;
  imports: { close(): Promise<void> | void } | undefined;
  /** We asked it to stop: its exit is expected. */
  stopping: boolean;
  exit: InstanceExit | undefined;
  teardown: Promise<void> | undefined;
  removal: Promise<void> | undefined;
}

const ROUTABLE: ReadonlySet<InstanceState> = new Set(['ready', 'paused', 'starting', 'stopping']);
const DEFAULT_TOKEN_TTL_MS = 24 * 3600_000;
const DEFAULT_READY_TIMEOUT_MS = 10_000;
const LOG_TAIL_LINES = 40;
/** Ended instances kept for their state and log until deleted. */
const KEEP_DEAD = 100;

export function createAgent(options: AgentOptions): Agent {
  const { state, admission, layerCache, events, images, mounter } = options;
  const allDrivers: Partial<Record<DriverName, Driver>> = { ...options.standbyDrivers, ...options.drivers };
  const live = new Map<string, Live>();
  const tokenTtlMs = options.tokenTtlMs ?? DEFAULT_TOKEN_TTL_MS;
  const log: Logger = options.logger ?? { info() {}, warn() {}, error() {} };
  let closing = false;
  let closed: Promise<void> | undefined;

  const driverFor = (name: DriverName): Driver => {
    const d = options.drivers[name];
    if (!d) {
      const have = Object.keys(options.drivers).join(', ') || 'none';
      throw new ShoalError('unsupported', `driver ${name} is not available on this host (available: ${have})`, { field: 'driver' });
    }
    return d;
  };
  const driverName = (d: Driver): DriverName => d.name as DriverName;
  const cacheMode = (d: Driver): CacheMode => (d.capabilities.isolation === 'none' ? 'flat' : 'overlay');

  const endpointFor = (l: Live): EndpointReference => {
    const expiresAt = Date.now() + tokenTtlMs;
    const service = l.record.plan.service;
    const token = signRouteToken({ instance: l.record.id, service: service.name, expiresAt }, options.routeKeys);
    const dataUrl = options.dataUrl();
    return { instance: l.record.id, service, host: { dataUrl }, url: `${dataUrl}/i`, token, expiresAt };
  };

  const info = (l: Live): InstanceInfo => {
    const r = l.record;
    const out: InstanceInfo = {
      id: r.id,
      service: r.plan.service,
      image: r.plan.image,
      manifestDigest: r.rootfs?.manifestDigest ?? '',
      driver: r.driver,
      state: r.state,
      resources: r.plan.resources,
      createdAt: r.createdAt,
    };
    if (r.timeline) out.timeline = r.timeline;
    if (r.exit) out.exit = r.exit;
    if (r.state === 'ready' || r.state === 'paused') out.endpoint = endpointFor(l);
    return out;
  };

  const save = async (l: Live): Promise<void> => {
    l.record.updatedAt = Date.now();
    await state.write(l.record);
  };

  const emit = (l: Live, type: Parameters<EventBus['emit']>[0]['type'], extra: { code?: number; signal?: string; message?: string } = {}): void => {
    events.emit({ type, instance: l.record.id, service: l.record.plan.service.name, ...extra });
  };

  const get = (id: string): Live => {
    const l = live.get(id);
    if (!l) throw new ShoalError('not-found', `no instance ${JSON.stringify(id)} on this host`, { field: 'id' });
    return l;
  };

  /** Release everything the instance holds except its record and log. Idempotent. */
  const teardown = (l: Live): Promise<void> => {
    l.teardown ??= (async () => {
      const errors: unknown[] = [];
      const step = async (what: string, fn: () => Promise<unknown> | unknown): Promise<void> => {
        try {
          await fn();
        } catch (e) {
          errors.push(e);
          log.error({ instance: l.record.id, err: String(e) }, `cleanup: ${what} failed`);
        }
      };
      const running = l.running;
      if (running && !l.exit) {
        l.stopping = true;
        await step('stop', async () => {
          if (isPausable(running) && l.record.state === 'paused') await running.resume().catch(() => {});
          await running.stop({ graceMs: 2000 });
        });
      }
      await step('driver destroy', () => l.driver.destroy(l.record.id, l.paths.stateDir));
      await step('close import sockets', () => l.imports?.close());
      l.imports = undefined;
      if (l.record.mounted) {
        await step('unmount', async () => {
          await mounter.unmountOverlay(l.paths.rootfs);
          l.record.mounted = false;
        });
      }
      // What is still mounted under the instance dir must not be recursed into.
      const stillMounted = await mounter.listMounts(l.paths.dir).catch(() => [l.paths.dir]);
      if (stillMounted.length === 0) {
        for (const d of [l.paths.upper, l.paths.work, l.paths.rootfs, l.paths.socketDir, l.paths.stateDir]) {
          await step(`remove ${d}`, () => rm(d, { recursive: true, force: true, maxRetries: 3 }));
        }
      } else {
        errors.push(new Error(`still mounted: ${stillMounted.join(', ')}`));
      }
      l.lease?.release();
      l.lease = undefined;
      if (l.reservation) admission.release(l.reservation);
      l.reservation = undefined;
      if (errors.length > 0) throw new ShoalError('internal', `cleanup of ${l.record.id} was incomplete: ${errors.map(String).join('; ')}`);
    })();
    return l.teardown;
  };

  const watchExit = (l: Live, running: RunningInstance): void => {
    if (l.record.mounted) {
      const stopDisk = watchDiskFull(l.paths.rootfs, () => emit(l, 'instance-disk-full'), (e) =>
        log.warn({ instance: l.record.id, err: String(e) }, 'cannot read the root layer usage'),
      );
      void running.exited.finally(stopDisk);
    }
    running.exited.then(
      (exit) => onExit(l, exit),
      (err) => onExit(l, { reason: 'crashed', code: undefined, signal: undefined, at: Date.now() }, String(err)),
    );
  };

  const onExit = (l: Live, exit: InstanceExit, message?: string): void => {
    l.exit = exit;
    const was = l.record.state;
    l.record.exit = {
      reason: exit.reason,
      at: exit.at,
      ...(exit.code === undefined ? {} : { code: exit.code }),
      ...(exit.signal === undefined ? {} : { signal: exit.signal }),
    };
    const extra = { ...(exit.code === undefined ? {} : { code: exit.code }), ...(exit.signal === undefined ? {} : { signal: exit.signal }), ...(message ? { message } : {}) };
    if (l.stopping) {
      emit(l, 'exited', extra);
      return; // remove() / close() finishes the job
    }
    // Unexpected: leave the routable set at once, tell, then free what it held.
    const next: InstanceState = exit.reason === 'oom' ? 'oom' : exit.reason === 'exited' && exit.code === 0 ? 'exited' : 'crashed';
    l.record.state = next;
    options.onUnroutable?.(l.record.id);
    const type = next === 'oom' ? 'oom' : next === 'crashed' ? 'crashed' : 'exited';
    emit(l, type, extra);
    log.warn({ instance: l.record.id, exit }, `instance ${type}`);
    if (was === 'starting') return; // the deployment in progress sees the exit and cleans up
    void teardown(l)
      .catch(() => {})
      .then(() => save(l))
      .catch((e) => log.error({ instance: l.record.id, err: String(e) }, 'saving the exit failed'))
      .then(pruneDead);
  };

  /** Ended instances stay (state, exit, log) until deleted; past a limit the oldest go. */
  const pruneDead = (): void => {
    const dead = [...live.values()].filter((x) => !ROUTABLE.has(x.record.state) && !x.removal);
    dead.sort((a, b) => (a.exit?.at ?? 0) - (b.exit?.at ?? 0));
    for (const x of dead.slice(0, Math.max(0, dead.length - KEEP_DEAD))) void remove(x.record.id).catch(() => {});
  };

  const tailOf = async (file: string, lines: number): Promise<string> => {
    let fh;
    try {
      fh = await open(file, 'r');
    } catch {
      return '';
    }
    try {
      const { size } = await fh.stat();
      const want = Math.min(size, Math.max(64 * 1024, lines * 512));
      const buf = Buffer.alloc(want);
      await fh.read(buf, 0, want, size - want);
      const text = buf.toString('utf8');
      const all = text.split('\n');
      if (all.at(-1) === '') all.pop();
      return all.slice(-lines).join('\n') + (all.length > 0 ? '\n' : '');
    } finally {
      await fh.close();
    }
  };

  /** A live entry with nothing held yet: no reservation, lease, imports or pending teardown. */
  const liveEntry = (record: InstanceRecord, driver: Driver, running: Live['running']): Live => ({
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
  });

  const newLive = (id: string, plan: DeploymentPlan, driver: Driver, createdAt: number): Live =>
    liveEntry(
      {
        id,
        plan,
        driver: driverName(driver),
        state: 'starting',
        createdAt,
        updatedAt: createdAt,
        rootfs: undefined,
        rootPath: undefined,
        mounted: false,
        timeline: undefined,
        exit: undefined,
      },
      driver,
      undefined,
    );

  /**
   * The instance's root and everything else start() needs: the layers (pulled and
   * unpacked when missing), the overlay mount, the socket directory, the spec.
   * `onPulled` marks the end of pull+unpack for the timeline.
   */
  const prepareInstance = async (
    l: Live,
    rootfs: RootfsSpec,
    fetchBlob: BlobFetcher,
    onPulled: (lease: PreparedRoot) => void = () => {},
  ): Promise<{ spec: InstanceSpec; user: { uid: number; gid: number }; mountStart: number; mountEnd: number }> => {
    const { plan, id } = l.record;
    const paths = l.paths;
    await state.create(id);
    l.record.rootfs = rootfs;
    await save(l);
    const mode = cacheMode(l.driver);
    l.lease = await layerCache.prepare({ manifestDigest: rootfs.manifestDigest, layers: rootfs.layers }, fetchBlob, mode);
    onPulled(l.lease);

    const mountStart = performance.now();
    if (mode === 'overlay') {
      // overlayfs lists the topmost lower directory first
      await mounter.mountOverlay({
        lowerDirs: [...l.lease.lowerDirs].reverse(),
        upperDir: paths.upper,
        workDir: paths.work,
        target: paths.rootfs,
        // Bounded (ENOSPC past it) and, for a driver with a user namespace, id-mapped.
        sizeBytes: boundsRoot(l.driver) ? diskBytes(plan) : undefined,
        idmap: idMappingOf(l.driver),
      });
      l.record.mounted = true;
      l.record.rootPath = paths.rootfs;
    } else {
      l.record.rootPath = l.lease.flatDir;
    }
    await save(l);
    const mountEnd = performance.now();

    const user = await resolveUser(l.record.rootPath!, rootfs.process.user);
    const spec: InstanceSpec = {
      id,
      rootfs: l.record.rootPath!,
      args: plan.args ?? rootfs.process.args,
      // Without a mount namespace the service sees host paths, so it is told those.
      env: buildEnv(rootfs.process.env, plan, id, mode === 'flat' ? paths.socketDir : SOCKET_DIR_INSIDE),
      cwd: rootfs.process.cwd || '/',
      user,
      resources: {
        memoryBytes: plan.resources.memoryMb * 1024 * 1024,
        cpuMillis: plan.resources.cpuMillis,
        pids: plan.resources.pids,
        ...(boundsRoot(l.driver) ? { diskBytes: diskBytes(plan) } : {}),
      },
      listenSocket: paths.socketPath,
      importsDir: paths.importsDir,
      logFile: paths.logFile,
      stateDir: paths.stateDir,
    };
    if (spec.args.length === 0) throw new ShoalError('invalid', `image ${plan.image} names no program to run, and the plan gives no args`, { field: 'args' });
    return { spec, user, mountStart, mountEnd };
  };

  // ---- the warm pool: containers created ahead (driver.prepare) for images just deployed,
  // so the next deployment of the same plan only starts the program. Pool entries hold no
  // reservation and are not instances; they are destroyed on close and cleaned on recovery.
  interface WarmEntry {
    key: string;
    live: Live;
    spec: InstanceSpec;
    user: { uid: number; gid: number };
  }
  const warmPerKey = options.warmPool?.perImage ?? 1;
  const warmMax = options.warmPool?.max ?? 4;
  const warm: WarmEntry[] = [];
  const warming = new Map<string, number>();
  const warmJobs = new Set<Promise<void>>();

  const warmKey = (driver: Driver, plan: DeploymentPlan, rootfs: RootfsSpec): string =>
    JSON.stringify([driver.name, rootfs.manifestDigest, plan.service, plan.args ?? null, plan.env ?? {}, plan.resources]);

  const discardWarm = async (e: WarmEntry): Promise<void> => {
    await teardown(e.live).catch((err) => log.error({ instance: e.live.record.id, err: String(err) }, 'discarding a warm container'));
    await state.remove(e.live.record.id).catch(() => {});
  };

  const takeWarm = (key: string): WarmEntry | undefined => {
    const i = warm.findIndex((e) => e.key === key);
    if (i < 0) return undefined;
    return warm.splice(i, 1)[0];
  };

  const cannotPrepare = new Set<Driver>();
  const refillWarm = (driver: Driver, plan: DeploymentPlan, rootfs: RootfsSpec, fetchBlob: BlobFetcher): void => {
    if (closing || warmPerKey <= 0 || warmMax <= 0 || !canPrepare(driver) || cannotPrepare.has(driver)) return;
    const key = warmKey(driver, plan, rootfs);
    const have = warm.filter((e) => e.key === key).length + (warming.get(key) ?? 0);
    if (have >= warmPerKey) return;
    if (warm.length + [...warming.values()].reduce((a, b) => a + b, 0) >= warmMax) {
      const oldest = warm.findIndex((e) => e.key !== key);
      if (oldest < 0) return;
      void discardWarm(warm.splice(oldest, 1)[0]!);
    }
    warming.set(key, (warming.get(key) ?? 0) + 1);
    const l = newLive(newInstanceId(plan.service.name), plan, driver, Date.now());
    const job = (async () => {
      try {
        const { spec, user } = await prepareInstance(l, rootfs, fetchBlob);
        await driver.prepare(spec);
        if (closing) throw new Error('closing');
        warm.push({ key, live: l, spec, user });
      } catch (e) {
        // A driver that cannot prepare here (runc without its shim) is not asked again.
        if (isShoalError(e) && e.code === 'unsupported') cannotPrepare.add(driver);
        if (!closing) log.warn({ instance: l.record.id, err: String(e) }, 'could not pre-create a container');
        await teardown(l).catch(() => {});
        await state.remove(l.record.id).catch(() => {});
      } finally {
        const n = (warming.get(key) ?? 1) - 1;
        if (n > 0) warming.set(key, n);
        else warming.delete(key);
      }
    })();
    warmJobs.add(job);
    void job.finally(() => warmJobs.delete(job));
  };

  const deploy = async (plan: DeploymentPlan): Promise<DeploymentResult> => {
    if (closing) throw new ShoalError('unavailable', 'the host is shutting down');
    const t0 = performance.now();
    const startedAt = Date.now();
    const phases: TimelinePhase[] = [];
    const rel = (t: number): number => Math.round((t - t0) * 100) / 100;
    const phase = (name: PhaseName, start: number, end: number): void => {
      phases.push({ name, startMs: rel(start), endMs: rel(end) });
      options.onPhase?.(name, end - start);
    };

    const driver = driverFor(plan.driver ?? options.defaultDriver);
    const firstId = newInstanceId(plan.service.name);
    const admitted = admission.reserve(firstId, { memoryMb: plan.resources.memoryMb, cpuMillis: plan.resources.cpuMillis });
    if (!admitted.ok) throw new ShoalError('conflict', `refused: ${admitted.reason}`, { detail: { reason: admitted.reason } });
    let l = newLive(firstId, plan, driver, startedAt);
    l.reservation = admitted.reservation;
    live.set(firstId, l);
    const tAdmit = performance.now();
    phase('admit', t0, tAdmit);

    try {
      const { rootfs, fetchBlob } = await images.resolve(plan.store, plan.image);
      let spec: InstanceSpec;
      let user: { uid: number; gid: number };
      const hit = takeWarm(warmKey(driver, plan, rootfs));
      if (hit) {
        // A container created ahead for this very plan: take over its identity.
        const w = hit.live;
        live.delete(firstId);
        admission.release(l.reservation!);
        w.reservation = admission.adopt(w.record.id, { memoryMb: plan.resources.memoryMb, cpuMillis: plan.resources.cpuMillis });
        w.record.plan = plan;
        w.record.createdAt = startedAt;
        l = w;
        live.set(w.record.id, w);
        await save(w);
        spec = hit.spec;
        user = hit.user;
        const t = performance.now();
        for (const name of ['pull', 'unpack', 'mount', 'create'] as const) phase(name, tAdmit, t);
      } else {
        let tPulled = tAdmit;
        let lease: PreparedRoot | undefined;
        const prepared = await prepareInstance(l, rootfs, fetchBlob, (x) => {
          tPulled = performance.now();
          lease = x;
        });
        const { pull, unpack } = lease!.timings;
        phase('pull', tAdmit, pull ? pull[1] : tPulled);
        if (unpack) phase('unpack', unpack[0], unpack[1]);
        else phase('unpack', tPulled, tPulled);
        phase('mount', prepared.mountStart, prepared.mountEnd);
        spec = prepared.spec;
        user = prepared.user;
      }
      const tCreate = performance.now();
      if (plan.imports && plan.imports.length > 0) {
        l.imports = await options.openImportSockets(l.paths.importsDir, plan.imports, { uid: user.uid, gid: user.gid });
      }
      const tCreated = performance.now();
      if (!hit) phase('create', tCreate, tCreated);

      // start
      const running = await driver.start(spec);
      l.running = running;
      watchExit(l, running);
      const tStarted = performance.now();
      phase('start', tCreated, tStarted);
      emit(l, 'started');

      // ready
      const timeoutMs = plan.readiness?.timeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
      await waitReady(l.paths.socketPath, plan.readiness?.path ?? '/healthz', timeoutMs, running.exited, () => closing);
      const tReady = performance.now();
      phase('ready', tStarted, tReady);
      if (l.exit) throw exitedEarly(l.exit);

      const pull = hit ? { bytes: 0, layersFetched: 0, layersCached: rootfs.layers.length } : l.lease!.stats;
      const timeline: DeploymentTimeline = { startedAt, phases, pull, totalMs: rel(tReady) };
      l.record.timeline = timeline;
      l.record.state = 'ready';
      await save(l);
      emit(l, 'ready');
      log.info({ instance: l.record.id, service: plan.service.name, totalMs: timeline.totalMs, warm: hit !== undefined }, 'instance ready');
      refillWarm(driver, plan, rootfs, fetchBlob);
      return { endpoint: endpointFor(l), timeline, instance: info(l) };
    } catch (err) {
      const id = l.record.id;
      const exitedFirst = l.exit; // before teardown stops it, which sets l.exit too
      const tail = await tailOf(l.paths.logFile, LOG_TAIL_LINES);
      options.onUnroutable?.(id);
      await teardown(l).catch((e) => log.error({ instance: id, err: String(e) }, 'cleanup after a failed deployment'));
      live.delete(id);
      await state.remove(id).catch(() => {});
      const base = isShoalError(err) ? err : new ShoalError('internal', `deployment failed: ${String((err as Error)?.message ?? err)}`, { cause: err });
      if (exitedFirst) {
        throw new ShoalError('unavailable', `instance exited before it was ready (${describeExit(exitedFirst)})`, { detail: { log: tail, exit: exitedFirst } });
      }
      throw new ShoalError(base.code, base.message, {
        ...(base.field === undefined ? {} : { field: base.field }),
        detail: { ...(typeof base.detail === 'object' && base.detail !== null ? base.detail : {}), log: tail },
        cause: err,
      });
    }
  };

  const remove = (id: string): Promise<void> => {
    const l = get(id);
    if (l.record.state === 'starting') {
      return Promise.reject(new ShoalError('conflict', `instance ${id} is still starting; delete it once it is ready or failed`));
    }
    l.removal ??= (async () => {
      if (ROUTABLE.has(l.record.state)) {
        l.record.state = 'stopping';
        l.stopping = true;
      }
      options.onUnroutable?.(id);
      await teardown(l).catch(async () => {
        l.teardown = undefined; // one more try: a busy mount may have let go by now
        await teardown(l);
      });
      await state.remove(id);
      live.delete(id);
      emit(l, 'removed');
    })();
    return l.removal;
  };

  const pauseResume = async (id: string, to: 'paused' | 'ready'): Promise<InstanceInfo> => {
    const l = get(id);
    const running = l.running;
    const from = to === 'paused' ? 'ready' : 'paused';
    if (l.record.state === to) return info(l);
    if (l.record.state !== from || !running) {
      throw new ShoalError('conflict', `instance ${id} is ${l.record.state}; it can be ${to === 'paused' ? 'paused when ready' : 'resumed when paused'}`);
    }
    if (!isPausable(running) || !l.driver.capabilities.canPause) {
      throw new ShoalError('unsupported', `driver ${l.driver.name} cannot pause instances`);
    }
    if (to === 'paused') await running.pause();
    else await running.resume();
    l.record.state = to;
    await save(l);
    emit(l, to === 'paused' ? 'paused' : 'resumed');
    return info(l);
  };

  const recover = async (): Promise<{ adopted: string[]; cleaned: string[] }> => {
    const { records, orphans } = await state.list();
    const adopted: string[] = [];
    const cleaned: string[] = [];
    const byDriver = new Map<Driver, InstanceRecord[]>();
    for (const r of records) {
      const d = allDrivers[r.driver];
      if (!d) {
        log.warn({ instance: r.id, driver: r.driver }, 'instance of a driver this host no longer has: cleaning it up');
        continue;
      }
      byDriver.set(d, [...(byDriver.get(d) ?? []), r]);
    }
    const found = new Map<string, { driver: Driver; status: string; instance: RunningInstance | undefined }>();
    for (const d of new Set(Object.values(allDrivers))) {
      const known = (byDriver.get(d) ?? []).map((r) => ({ id: r.id, stateDir: state.paths(r.id).stateDir }));
      try {
        for (const rec of await d.recover(known)) found.set(rec.id, { driver: d, status: rec.status, instance: rec.instance });
      } catch (e) {
        log.error({ driver: d.name, err: String(e) }, 'driver recovery failed: its instances are cleaned up');
      }
    }
    for (const r of records) {
      const paths = state.paths(r.id);
      const f = found.get(r.id);
      const driver = allDrivers[r.driver];
      const alive =
        driver !== undefined &&
        f?.instance !== undefined &&
        f.status !== 'stopped' &&
        (r.state === 'ready' || r.state === 'paused') &&
        r.rootfs !== undefined;
      const l = liveEntry(r, driver ?? ({ name: r.driver, destroy: async () => {} } as unknown as Driver), f?.instance);
      if (alive) {
        try {
          if (r.mounted && !(await mounter.listMounts(paths.rootfs)).includes(paths.rootfs)) {
            throw new Error(`its root ${paths.rootfs} is no longer mounted`);
          }
          l.reservation = admission.adopt(r.id, { memoryMb: r.plan.resources.memoryMb, cpuMillis: r.plan.resources.cpuMillis });
          l.lease = layerCache.retain({ manifestDigest: r.rootfs!.manifestDigest, layers: r.rootfs!.layers }, cacheMode(l.driver));
          if (r.plan.imports && r.plan.imports.length > 0) {
            await clearSockets(paths.importsDir);
            const owner = await resolveUser(r.rootPath ?? paths.rootfs, r.rootfs!.process.user).catch(() => NOBODY);
            l.imports = await options.openImportSockets(paths.importsDir, r.plan.imports, { uid: owner.uid, gid: owner.gid });
          }
          r.state = f!.status === 'paused' ? 'paused' : 'ready';
          live.set(r.id, l);
          watchExit(l, f!.instance!);
          await save(l);
          adopted.push(r.id);
          log.info({ instance: r.id }, 're-adopted a live instance');
          continue;
        } catch (e) {
          log.warn({ instance: r.id, err: String(e) }, 'cannot re-adopt: cleaning up');
          live.delete(r.id);
        }
      }
      // Dead (or not re-adoptable): stop whatever is left, release, remove.
      await teardown(l).catch((e) => log.error({ instance: r.id, err: String(e) }, 'cleanup during recovery'));
      await state.remove(r.id).catch(() => {});
      cleaned.push(r.id);
    }
    for (const id of orphans) {
      const paths = state.paths(id);
      for (const m of (await mounter.listMounts(paths.dir)).sort().reverse()) await mounter.unmountOverlay(m).catch(() => {});
      for (const d of new Set(Object.values(allDrivers))) await d.destroy(id, paths.stateDir).catch(() => {});
      await state.remove(id);
      cleaned.push(id);
    }
    // Stray mounts under the instances dir that belong to no live instance.
    const keep = new Set([...live.values()].filter((l) => l.record.mounted).map((l) => l.paths.rootfs));
    for (const m of (await mounter.listMounts(state.instancesDir)).sort().reverse()) {
      if (!keep.has(m)) {
        log.warn({ mount: m }, 'unmounting a stray mount');
        await mounter.unmountOverlay(m).catch((e) => log.error({ mount: m, err: String(e) }, 'cannot unmount'));
      }
    }
    return { adopted, cleaned };
  };

  return {
    deploy,
    list() {
      return [...live.values()].map(info);
    },
    async get(id, opts = {}) {
      const l = get(id);
      const out = info(l);
      if (opts.stats !== false && l.running && !l.exit) {
        try {
          const s = await l.running.stats();
          out.stats = {
            ...(s.memoryBytes === undefined ? {} : { memoryBytes: s.memoryBytes }),
            ...(s.cpuUsageNanos === undefined ? {} : { cpuUsageNanos: s.cpuUsageNanos }),
            ...(s.pids === undefined ? {} : { pids: s.pids }),
          };
        } catch {
          // stats are best effort
        }
      }
      return out;
    },
    remove,
    pause: (id) => pauseResume(id, 'paused'),
    resume: (id) => pauseResume(id, 'ready'),
    async logs(id, tail) {
      const l = get(id);
      return tailOf(l.paths.logFile, tail);
    },
    resolve(id) {
      const l = live.get(id);
      if (!l || !ROUTABLE.has(l.record.state)) return undefined;
      return { socketPath: l.paths.socketPath, state: l.record.state as RoutableInstance['state'] };
    },
    recover,
    liveCount() {
      let n = 0;
      for (const l of live.values()) if (ROUTABLE.has(l.record.state)) n++;
      return n;
    },
    close(opts = {}) {
      closed ??= closeOnce(opts);
      return closed;
    },
  };

  async function closeOnce(opts: { stopInstances?: boolean }): Promise<void> {
    {
      closing = true;
      await Promise.allSettled([...warmJobs]);
      await Promise.allSettled(warm.splice(0).map(discardWarm));
      const stopInstances = opts.stopInstances ?? true;
      const all = [...live.values()];
      if (stopInstances) {
        // Deployments in progress see `closing` and fail; wait for them to clean up.
        await Promise.allSettled(
          all.map(async (l) => {
            if (l.record.state === 'starting') {
              await waitUntil(() => !live.has(l.record.id), 15_000);
              return;
            }
            await remove(l.record.id);
          }),
        );
      } else {
        // Leave them running for the next host process to re-adopt; only host-side parts go.
        for (const l of all) {
          await Promise.resolve(l.imports?.close()).catch(() => {});
          l.imports = undefined;
        }
        // They now belong to whichever agent recovers them next.
        live.clear();
      }
      for (const d of new Set(Object.values(allDrivers))) await d.close().catch(() => {});
    }
  }
}

function exitedEarly(exit: InstanceExit): ShoalError {
  return new ShoalError('unavailable', `instance exited before it was ready (${describeExit(exit)})`);
}

function describeExit(exit: InstanceExit): string {
  const parts: string[] = [exit.reason];
  if (exit.code !== undefined) parts.push(`code ${exit.code}`);
  if (exit.signal !== undefined) parts.push(`signal ${exit.signal}`);
  return parts.join(', ');
}

/** The instance's environment: the image's, then the plan's, then Shoal's own (which win). */
function buildEnv(imageEnv: string[], plan: DeploymentPlan, id: string, socketDir: string): string[] {
  const env = new Map<string, string>();
  for (const kv of imageEnv) {
    const eq = kv.indexOf('=');
    if (eq > 0) env.set(kv.slice(0, eq), kv.slice(eq + 1));
  }
  if (!env.has('PATH')) env.set('PATH', '/usr/local/bin:/usr/bin:/bin');
  for (const [k, v] of Object.entries(plan.env ?? {})) env.set(k, v);
  env.set('SHOAL_LISTEN', `${socketDir}/app.sock`);
  env.set('SHOAL_IMPORTS', `${socketDir}/imports`);
  env.set('SHOAL_SERVICE', plan.service.name);
  env.set('SHOAL_VERSION', plan.service.version);
  env.set('SHOAL_INSTANCE', id);
  return [...env].map(([k, v]) => `${k}=${v}`);
}

const NOBODY = { uid: 65534, gid: 65534 };

const DEFAULT_DISK_MB = 64;
const diskBytes = (plan: DeploymentPlan): number => (plan.resources.diskMb ?? DEFAULT_DISK_MB) * 1024 * 1024;

/** The image config's User ("uid", "uid:gid", "name", "name:group"); nobody when unset. */
async function resolveUser(root: string, user: string | undefined): Promise<{ uid: number; gid: number }> {
  if (!user) return NOBODY;
  const [u, g] = user.split(':', 2) as [string, string | undefined];
  const readDb = async (file: string): Promise<string[][]> => {
    try {
      const { readFile } = await import('node:fs/promises');
      return (await readFile(join(root, file), 'utf8')).split('\n').map((line) => line.split(':'));
    } catch {
      return [];
    }
  };
  let uid: number;
  let gid: number | undefined;
  if (/^\d+$/.test(u)) {
    uid = Number(u);
  } else {
    const row = (await readDb('etc/passwd')).find((r) => r[0] === u);
    if (!row) throw new ShoalError('invalid', `image user ${JSON.stringify(u)} is not in the image's /etc/passwd`, { field: 'image' });
    uid = Number(row[2]);
    gid = Number(row[3]);
  }
  if (g !== undefined) {
    if (/^\d+$/.test(g)) gid = Number(g);
    else {
      const row = (await readDb('etc/group')).find((r) => r[0] === g);
      if (!row) throw new ShoalError('invalid', `image group ${JSON.stringify(g)} is not in the image's /etc/group`, { field: 'image' });
      gid = Number(row[2]);
    }
  }
  if (gid === undefined) {
    const row = (await readDb('etc/passwd')).find((r) => Number(r[2]) === uid);
    gid = row ? Number(row[3]) : uid;
  }
  return { uid, gid };
}

async function clearSockets(dir: string): Promise<void> {
  let names: string[] = [];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  for (const n of names) if (n.endsWith('.sock')) await unlink(join(dir, n)).catch(() => {});
}

async function waitUntil(cond: () => boolean, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
}

/**
 * Polls GET <path> on the instance's socket until it answers 200. Quick at first (the
 * socket usually appears within tens of ms), then backing off. Fails early if the
 * instance exits, with 'timeout' past the deadline.
 */
export async function waitReady(
  socketPath: string,
  path: string,
  timeoutMs: number,
  exited: Promise<InstanceExit>,
  aborted: () => boolean = () => false,
): Promise<void> {
  const start = performance.now();
  const deadline = start + timeoutMs;
  let gone: InstanceExit | undefined;
  void exited.then((e) => {
    gone = e;
  }, () => {});
  let lastError = 'no answer';
  let attempt = 0;
  for (;;) {
    if (gone) throw exitedEarly(gone);
    if (aborted()) throw new ShoalError('unavailable', 'the host is shutting down');
    const left = deadline - performance.now();
    if (left <= 0) throw new ShoalError('timeout', `instance not ready within ${timeoutMs} ms (last: ${lastError})`, { field: 'readiness.timeoutMs' });
    // Probing a socket file that does not exist yet costs a failed stat; skip the request.
    const present = await stat(socketPath).then(
      () => true,
      () => false,
    );
    if (present) {
      const status = await probe(socketPath, path, Math.min(left, 2000)).catch((e: Error) => {
        lastError = e.message;
        return 0;
      });
      if (status === 200) return;
      if (status !== 0) lastError = `status ${status}`;
    } else {
      lastError = `socket ${socketPath} not there yet`;
    }
    attempt++;
    const elapsed = performance.now() - start;
    const wait = elapsed < 200 ? 5 : elapsed < 2000 ? 20 : 100;
    await new Promise<void>((r) => setTimeout(r, attempt === 1 ? 2 : wait));
  }
}

function probe(socketPath: string, path: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ socketPath, path, method: 'GET', timeout: timeoutMs, headers: { host: 'localhost', connection: 'close' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${Math.round(timeoutMs)} ms`)));
    req.on('error', reject);
    req.end();
  });
}
