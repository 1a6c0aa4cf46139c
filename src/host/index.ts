// The host part's door: startHost() wires the agent, the control API, the data-plane
// forwarder, the layer cache and the drivers together, recovers what an earlier run
// left, and listens. `shoal host`, `shoal up` and the tests all start a host this way.
// Each piece lives in its own module; this file only puts them together in order.
import { chmod, mkdir } from 'node:fs/promises';
import { resolve as resolvePath } from 'node:path';
import { getRequestListener } from '@hono/node-server';
import { createAdmission, type Capacity } from './admission.ts';
import { createAgent, type Agent } from './agent.ts';
import type { LivenessLimits } from './instances/liveness.ts';
import { createControlApi } from './control-api.ts';
import { createEventBus, type EventBus } from './events.ts';
import { createHostState } from './host-state.ts';
import type { LayerCache } from './layer-cache.ts';
import { createHostMetrics, type HostMetrics } from './metrics.ts';
import { checkBindAddress, closeServer, createListener, hardenServer, type TlsIdentity } from '../http/index.ts';
import { openImportSockets } from './data-plane/import-sockets.ts';
import { listMounts, mountOverlay, unmountOverlay } from './rootfs/overlay.ts';
import { defaultDriverName } from './drivers/index.ts';
import { silentLogger, type Logger } from './ports.ts';
import { checkDataDirLength, loadIdentity, lockDataDir } from './data-dir.ts';
import { createFingerprintCache, driverFactory, openDrivers, type FingerprintCache, type HostDrivers } from './host-drivers.ts';
import { DEFAULT_LAYER_CACHE_BYTES, openHostLayerCache } from './host-layer-cache.ts';
import { startDataServer } from './data-server.ts';
import { createStoreImageSource } from './image-source.ts';
import { createStateStore } from './state-store.ts';
import { hostReport, metricsSnapshot, type HostFacts } from './host-report.ts';
import { listen } from './listen.ts';
import { listenPreferring, readPorts, writePorts } from './listen-ports.ts';
import { advertisedUrl, ShoalError } from '../protocol/index.ts';
import type { HostReport } from '../protocol/index.ts';
import type { DriverName, RuncHardeningOptions } from './drivers/index.ts';

export { defaultDriverName, driverNames, isDriverName, type DriverName } from './drivers/index.ts';
export type { Agent } from './agent.ts';
export type { Capacity } from './admission.ts';
export type { EventBus } from './events.ts';

export interface HostOptions {
  /** Instances, layer cache, host key. Kept short: instance sockets live under it. */
  dataDir: string;
  /** The control API. Port 0 picks a free one. */
  listen: { host: string; port: number };
  /** The data plane (forwarder). Default: the control host, a free port. */
  dataListen?: { host: string; port: number };
  /** Bearer token of the control API (at least 8 characters). */
  token: string;
  /** An API token for pulling from stores that refuse anonymous pulls. */
  storeToken?: string | undefined;
  capacity: Capacity;
  /** The driver plans get unless they name one. Default: runc where it works, else process. */
  driver?: DriverName;
  /** Drivers plans may name. Default: just the default driver. */
  drivers?: DriverName[];
  /** Budget of the unpacked-layer cache. Default 10 GiB. */
  layerCacheBytes?: number;
  /** Lifetime of the route tokens handed out. Default 10 min. */
  tokenTtlMs?: number;
  /** The address put in endpoint references when listening on a wildcard. */
  advertiseHost?: string;
  /** Serve the control API and the data plane over HTTPS (required off loopback unless `insecure`). */
  tls?: TlsIdentity;
  /** Allow plain HTTP on a non-loopback address (with a warning on stderr). */
  insecure?: boolean;
  /**
   * Containers created ahead for plans just deployed (runc): per plan (default 1; 0 = off)
   * and in all (default 4); for their images' templates, serving first deployments
   * (perTemplate default 1, 0 when perImage is 0; maxTemplates default 2).
   */
  warmPool?: { perImage?: number; max?: number; perTemplate?: number; maxTemplates?: number };
  /** Probing ready instances: period (default 5 s; 0 = only when the forwarder gets no answer), timeout, failures in a row. */
  liveness?: LivenessLimits;
  /** runc's hardening (user namespace, bounded root, log cap): all on by default; off only to compare or debug. */
  runc?: RuncHardeningOptions;
  logger?: Logger;
}

export interface Host {
  readonly hostId: string;
  readonly controlUrl: string;
  readonly dataUrl: string;
  readonly agent: Agent;
  readonly events: EventBus;
  readonly layerCache: LayerCache;
  report(): Promise<HostReport>;
  /** Stops listening. stopInstances (default true) removes every instance; false leaves them for re-adoption. */
  close(options?: { stopInstances?: boolean }): Promise<void>;
}

export async function startHost(options: HostOptions): Promise<Host> {
  const dataDir = resolvePath(options.dataDir);
  checkDataDirLength(dataDir);
  const secure = { tls: options.tls !== undefined, insecure: options.insecure };
  checkBindAddress('the host control API', options.listen.host, secure);
  checkBindAddress('the host data plane', (options.dataListen ?? options.listen).host, secure);
  const log: Logger = options.logger ?? silentLogger;
  await mkdir(dataDir, { recursive: true });
  const releaseLock = await lockDataDir(dataDir, log);
  try {
    return await startLocked(options, dataDir, log, releaseLock);
  } catch (e) {
    releaseLock();
    throw e;
  }
}

async function startLocked(options: HostOptions, dataDir: string, log: Logger, releaseLock: () => void): Promise<Host> {
  // Traverse-only for others: a process-driver instance running as nobody must reach its
  // flat tree and socket dir below; nothing here can be listed, and the key is 0600.
  await chmod(dataDir, 0o711);
  const { routeKey, hostId } = await loadIdentity(dataDir);
  const state = createHostState(dataDir, { log });
  const defaultDriver = options.driver ?? (await defaultDriverName());
  const set = await openDrivers({ defaultDriver, ...(options.drivers ? { names: options.drivers } : {}), state, make: driverFactory(dataDir, log, options.runc) });
  const fingerprints = createFingerprintCache();
  await requireHealthy(set, defaultDriver, fingerprints, log);

  const admission = createAdmission(options.capacity);
  const events = createEventBus({ onListenerError: (e) => log.error({ err: String(e) }, 'event listener failed') });
  const layerCache = await openHostLayerCache(dataDir, options.layerCacheBytes ?? DEFAULT_LAYER_CACHE_BYTES, log);
  let agentRef: Agent | undefined;
  // A restart keeps the addresses of the last run when asked for any port (listen-ports.ts).
  const recorded = await readPorts(dataDir, log);
  const dataAt = options.dataListen ?? { host: options.listen.host, port: 0 };
  let data!: Awaited<ReturnType<typeof startDataServer>>;
  const dataPort = await listenPreferring(
    dataAt.port,
    recorded.data,
    async (port) => {
      data = await startDataServer({
        keys: [new Uint8Array(routeKey)],
        resolveInstance: (id) => agentRef?.resolve(id),
        onNoAnswer: (id) => agentRef?.suspect(id),
        listen: { host: dataAt.host, port },
        ...(options.advertiseHost === undefined ? {} : { advertiseHost: options.advertiseHost }),
        tls: options.tls,
      });
      return Number(new URL(data.url).port);
    },
    log,
    'data-plane',
  );
  let metricsRef: HostMetrics | undefined;
  const agent = createAgent({
    state,
    admission,
    layerCache,
    events,
    drivers: set.drivers,
    standbyDrivers: set.standby,
    defaultDriver,
    images: createStoreImageSource({ userAgent: `shoal-host/${hostId}`, ...(options.storeToken === undefined ? {} : { token: options.storeToken }), onPulled: (bytes, blobs) => metricsRef?.pulled(bytes, blobs) }),
    mounter: { mountOverlay, unmountOverlay, listMounts },
    openImportSockets: (dir, bindings, o) => openImportSockets(dir, bindings, o),
    routeKeys: [new Uint8Array(routeKey)],
    dataUrl: () => data.url,
    ...(options.tokenTtlMs === undefined ? {} : { tokenTtlMs: options.tokenTtlMs }),
    onUnroutable: (id) => data.forwarder.forget(id),
    onPhase: (name, ms) => metricsRef?.phase(name, ms),
    ...(options.warmPool === undefined ? {} : { warmPool: options.warmPool }),
    ...(options.liveness === undefined ? {} : { liveness: options.liveness }),
    logger: log,
    states: createStateStore({ userAgent: `shoal-host/${hostId}`, ...(options.storeToken === undefined ? {} : { token: options.storeToken }) }),
    quiesce: (id, ms) => data.forwarder.quiesce(id, ms),
  });
  agentRef = agent;

  let controlUrl = '';
  const facts: HostFacts = {
    hostId,
    urls: () => ({ controlUrl, dataUrl: data.url }),
    admission,
    agent,
    load: data.load,
    layerCache,
    drivers: set.drivers,
    defaultDriver,
    fingerprints,
  };
  const metrics = createHostMetrics(() => metricsSnapshot(facts));
  metricsRef = metrics;
  watchEvents(events, metrics, log);

  let control!: { port: number; close(): Promise<void> };
  try {
    const recovered = await agent.recover();
    if (recovered.adopted.length + recovered.cleaned.length > 0) log.info(recovered, 'recovered instances from the state dir');
    const app = createControlApi({ agent, token: options.token, events, metrics, report: () => hostReport(facts), logger: log });
    await listenPreferring(options.listen.port, recorded.control, async (port) => (control = await startControlServer(app.fetch, { host: options.listen.host, port }, options.tls)).port, log, 'control');
  } catch (e) {
    await data.close();
    await agent.close({ stopInstances: false });
    throw e;
  }
  controlUrl = advertisedUrl(options.listen.host, control.port, options.advertiseHost, options.tls !== undefined);
  await writePorts(dataDir, { control: control.port, data: dataPort }).catch((e: unknown) => log.warn({ err: String(e) }, 'recording the ports failed: a restart may listen on new ones'));
  log.info({ controlUrl, dataUrl: data.url, driver: defaultDriver, hostId }, 'host listening');

  let closing: Promise<void> | undefined;
  const parts = { control, agent, data, layerCache, releaseLock, log, hostId };
  return {
    hostId,
    controlUrl,
    dataUrl: data.url,
    agent,
    events,
    layerCache,
    report: () => hostReport(facts),
    close(opts = {}) {
      closing ??= stopHost(parts, opts.stopInstances ?? true);
      return closing;
    },
  };
}

/** Metrics count every event; the log tells all but the routine ones. */
function watchEvents(events: EventBus, metrics: HostMetrics, log: Logger): void {
  events.subscribe((e) => metrics.event(e));
  events.subscribe((e) => {
    if (e.type === 'ready' || e.type === 'removed') return;
    log.info({ event: e.type, instance: e.instance, code: e.code, signal: e.signal }, `instance ${e.type}`);
  });
}

/** Control API first (no new work), then the instances, then the data plane. */
async function stopHost(
  p: { control: { close(): Promise<void> }; agent: Agent; data: { close(): Promise<void> }; layerCache: LayerCache; releaseLock(): void; log: Logger; hostId: string },
  stopInstances: boolean,
): Promise<void> {
  await p.control.close();
  await p.agent.close({ stopInstances });
  await p.data.close();
  await p.layerCache.settle();
  p.releaseLock();
  p.log.info({ hostId: p.hostId }, 'host stopped');
}

/** A default driver that cannot run here stops the start (and every driver opened). */
async function requireHealthy(set: HostDrivers, defaultDriver: DriverName, fingerprints: FingerprintCache, log: Logger): Promise<void> {
  const fp = await fingerprints.get(set.drivers[defaultDriver]!);
  if (fp.healthy) return;
  for (const d of [...Object.values(set.drivers), ...Object.values(set.standby)]) {
    await d.close().catch((e: unknown) => log.warn({ driver: d.name, err: String(e) }, 'closing the driver failed'));
  }
  throw new ShoalError('unavailable', `driver ${defaultDriver} cannot run here: ${fp.detail}`, { field: 'driver' });
}

async function startControlServer(
  fetch: (req: Request) => Response | Promise<Response>,
  at: { host: string; port: number },
  tls: TlsIdentity | undefined,
): Promise<{ port: number; close(): Promise<void> }> {
  const server = hardenServer(createListener({ tls }, getRequestListener(fetch)), { jsonBodies: ['/v1/'] });
  const port = await listen(server, at.host, at.port);
  // SSE streams never end by themselves: cut every connection after a short grace.
  return { port, close: () => closeServer(server, async () => {}, 200) };
}
