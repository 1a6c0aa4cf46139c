// The host part's door: startHost() wires the agent, the control API, the data-plane
// forwarder, the layer cache and the drivers together, recovers what an earlier run
// left, and listens. `shoal host`, `shoal up` and the tests all start a host this way.
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createReadStream, unlinkSync } from 'node:fs';
import { chmod, mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';
import { getRequestListener } from '@hono/node-server';
import { createAdmission, type Capacity } from './admission.ts';
import { createAgent, type Agent, type Logger } from './agent.ts';
import { createControlApi } from './control-api.ts';
import { createEventBus, type EventBus } from './events.ts';
import { createHostState } from './host-state.ts';
import { createLayerCache, type LayerCache } from './layer-cache.ts';
import { createHostMetrics } from './metrics.ts';
import { createForwarder } from './data-plane/forwarder.ts';
import { closeServer } from './data-plane/relay.ts';
import { openImportSockets } from './data-plane/import-sockets.ts';
import { listMounts, mountOverlay, unmountOverlay } from './rootfs/overlay.ts';
import { createDriver, defaultDriverName, type RuncHardeningOptions } from './drivers/index.ts';
import type { Driver, DriverFingerprint } from './drivers/driver.ts';
import { createRegistryClient, flattenLayers, resolveRemoteImage, unpackLayer, type RegistryClient, type RemoteImage } from '../image/index.ts';
import { parseImageRef } from '../protocol/image-ref.ts';
import type { Digest } from '../protocol/digest.ts';
import type { DriverName, HostReport } from '../protocol/deployment.ts';
import { ShoalError } from '../protocol/errors.ts';

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
  capacity: Capacity;
  /** The driver plans get unless they name one. Default: runc where it works, else process. */
  driver?: DriverName;
  /** Drivers plans may name. Default: just the default driver. */
  drivers?: DriverName[];
  /** Budget of the unpacked-layer cache. Default 10 GiB. */
  layerCacheBytes?: number;
  /** Lifetime of the route tokens handed out. Default 24 h. */
  tokenTtlMs?: number;
  /** The address put in endpoint references when listening on a wildcard. */
  advertiseHost?: string;
  /** Containers created ahead for plans just deployed (runc): per plan (default 1; 0 = off) and in all (default 4). */
  warmPool?: { perImage?: number; max?: number };
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

/**
 * Unix socket paths are limited to 107 bytes; instance sockets live at
 * <dataDir>/instances/<id ≤ 29>/run/app.sock (import sockets are checked when opened).
 */
const SOCKET_PATH_OVERHEAD = '/instances/'.length + 29 + '/run/app.sock'.length;

export async function startHost(options: HostOptions): Promise<Host> {
  const dataDir = resolvePath(options.dataDir);
  if (Buffer.byteLength(dataDir) + SOCKET_PATH_OVERHEAD > 107) {
    throw new ShoalError(
      'invalid',
      `dataDir ${dataDir} is too long: instance sockets under it would pass the 107-byte limit of Unix socket paths (keep it under ${107 - SOCKET_PATH_OVERHEAD} bytes)`,
      { field: 'dataDir' },
    );
  }
  const log: Logger = options.logger ?? { info() {}, warn() {}, error() {} };
  await mkdir(dataDir, { recursive: true });
  const releaseLock = await lockDataDir(dataDir);
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
  const routeKey = await loadOrCreate(join(dataDir, 'host.key'), () => randomBytes(32));
  const hostId = (await loadOrCreate(join(dataDir, 'host-id'), () => Buffer.from(`host-${randomBytes(4).toString('hex')}`))).toString('utf8').trim();

  // Drivers
  const defaultDriver = options.driver ?? (await defaultDriverName());
  const names = [...new Set([defaultDriver, ...(options.drivers ?? [])])];
  const drivers: Partial<Record<DriverName, Driver>> = {};
  for (const name of names) {
    drivers[name] = await createDriver(name, { dataDir, log: (message: string) => log.warn({ driver: name }, message), ...(options.runc ? { runc: options.runc } : {}) });
  }
  // Instances an earlier run started with a driver no longer offered still need it to be
  // re-adopted or cleaned up.
  const state = createHostState(dataDir);
  const standbyDrivers: Partial<Record<DriverName, Driver>> = {};
  for (const r of (await state.list()).records) {
    if (drivers[r.driver] || standbyDrivers[r.driver] || !(r.driver === 'runc' || r.driver === 'process')) continue;
    standbyDrivers[r.driver] = await createDriver(r.driver, {
      dataDir,
      log: (message: string) => log.warn({ driver: r.driver }, message),
      ...(options.runc ? { runc: options.runc } : {}),
    });
  }
  const fingerprints = new Map<string, { at: number; value: DriverFingerprint }>();
  const fingerprint = async (d: Driver): Promise<DriverFingerprint> => {
    const hit = fingerprints.get(d.name);
    if (hit && Date.now() - hit.at < 30_000) return hit.value;
    const value = await d.fingerprint().catch((e: unknown) => ({ healthy: false, detail: String(e), attributes: {} }));
    fingerprints.set(d.name, { at: Date.now(), value });
    return value;
  };
  const def = drivers[defaultDriver]!;
  const fp = await fingerprint(def);
  if (!fp.healthy) {
    await Promise.allSettled([...Object.values(drivers), ...Object.values(standbyDrivers)].map((d) => d.close()));
    throw new ShoalError('unavailable', `driver ${defaultDriver} cannot run here: ${fp.detail}`, { field: 'driver' });
  }

  const admission = createAdmission(options.capacity);
  const events = createEventBus({ onListenerError: (e) => log.error({ err: String(e) }, 'event listener failed') });
  const layerCache = createLayerCache({
    dir: join(dataDir, 'cache'),
    budgetBytes: options.layerCacheBytes ?? 10 * 1024 ** 3,
    unpack: async (file, dest, o) => {
      await unpackLayer(createReadStream(file), dest, { mediaType: o.mediaType, whiteouts: 'overlay', expectDiffId: o.expectDiffId });
    },
    flatten: async (layers, dest) => {
      await flattenLayers(
        layers.map((l) => ({ open: () => createReadStream(l.file), mediaType: l.mediaType, diffId: l.diffId })),
        dest,
      );
    },
    onEvict: (e) => log.info({ digest: e.digest, size: e.size }, 'evicted a cached layer'),
    onError: (m, e) => log.error({ err: String(e) }, m),
  });
  await layerCache.open();

  // Data plane: the forwarder behind a server of ours, which counts requests in flight.
  let inFlight = 0;
  let requestsTotal = 0;
  let agentRef: Agent | undefined;
  const forwarder = createForwarder({
    keys: [new Uint8Array(routeKey)],
    resolveInstance: (id) => agentRef?.resolve(id),
  });
  const dataServer = createServer({ keepAliveTimeout: 30_000 }, (req, res) => {
    inFlight++;
    requestsTotal++;
    res.once('close', () => inFlight--);
    forwarder.handle(req, res);
  });
  const dataListen = options.dataListen ?? { host: options.listen.host, port: 0 };
  const dataPort = await listen(dataServer, dataListen.host, dataListen.port);
  const advertise = (h: string): string => {
    const host = h === '0.0.0.0' || h === '::' ? (options.advertiseHost ?? '127.0.0.1') : (options.advertiseHost ?? h);
    return host.includes(':') ? `[${host}]` : host;
  };
  const dataUrl = `http://${advertise(dataListen.host)}:${dataPort}`;

  let metricsRef: ReturnType<typeof createHostMetrics> | undefined;
  const clients = new Map<string, RegistryClient>();
  const resolved = new Map<string, RemoteImage>();
  const agent = createAgent({
    state,
    admission,
    layerCache,
    events,
    drivers,
    standbyDrivers,
    defaultDriver,
    images: {
      async resolve(store, image) {
        let client = clients.get(store);
        if (!client) {
          client = createRegistryClient({ baseUrl: store, userAgent: `shoal-host/${hostId}` });
          clients.set(store, client);
        }
        const c = client;
        // A digest-pinned reference names immutable content: resolve it once.
        const key = `${store} ${image}`;
        let rootfs = resolved.get(key);
        if (!rootfs) {
          rootfs = await resolveRemoteImage(c, image).catch((e: unknown) => {
            if (e instanceof ShoalError) throw e;
            throw new ShoalError('unavailable', `the store at ${store} did not answer: ${(e as Error).message}`, { field: 'store', cause: e });
          });
          if (parseImageRef(image).digest !== undefined) {
            if (resolved.size >= 256) resolved.delete(resolved.keys().next().value!);
            resolved.set(key, rootfs);
          }
        }
        const image_ = rootfs;
        const sizes = new Map(rootfs.layers.map((l) => [l.digest, l.size]));
        return {
          rootfs,
          fetchBlob: async (digest, destFile, onBytes) => {
            const size = sizes.get(digest);
            await c.downloadBlob(image_.repository, digest as Digest, destFile, {
              onBytes: (n) => {
                onBytes(n);
                metricsRef?.pulled(n, 0);
              },
              ...(size === undefined ? {} : { expectedSize: size }),
            });
            metricsRef?.pulled(0, 1);
          },
        };
      },
    },
    mounter: { mountOverlay, unmountOverlay, listMounts },
    openImportSockets: (dir, bindings, o) => openImportSockets(dir, bindings, o),
    routeKeys: [new Uint8Array(routeKey)],
    dataUrl: () => dataUrl,
    ...(options.tokenTtlMs === undefined ? {} : { tokenTtlMs: options.tokenTtlMs }),
    onUnroutable: (id) => forwarder.forget(id),
    onPhase: (name, ms) => metricsRef?.phase(name, ms),
    ...(options.warmPool === undefined ? {} : { warmPool: options.warmPool }),
    logger: log,
  });
  agentRef = agent;

  const metrics = createHostMetrics(() => {
    const r = admission.reserved();
    return {
      instances: agent.liveCount(),
      reservedMemoryMb: r.memoryMb,
      reservedCpuMillis: r.cpuMillis,
      capacityMemoryMb: admission.capacity.memoryMb,
      capacityCpuMillis: admission.capacity.cpuMillis,
      capacityInstances: admission.capacity.instances,
      layerCacheBytes: layerCache.totalBytes(),
      layerCacheEntries: layerCache.entries().length,
      inFlight,
    };
  });
  metricsRef = metrics;
  events.subscribe((e) => metrics.event(e));
  events.subscribe((e) => {
    if (e.type === 'ready' || e.type === 'removed') return;
    log.info({ event: e.type, instance: e.instance, code: e.code, signal: e.signal }, `instance ${e.type}`);
  });

  try {
    const recovered = await agent.recover();
    if (recovered.adopted.length + recovered.cleaned.length > 0) log.info(recovered, 'recovered instances from the state dir');
  } catch (e) {
    await closeServer(dataServer, forwarder.close);
    await agent.close({ stopInstances: false });
    releaseLock();
    throw e;
  }

  let controlUrl = '';
  const report = async (): Promise<HostReport> => {
    const live = new Set<string>();
    for (const i of agent.list()) if (i.state === 'ready' || i.state === 'paused' || i.state === 'starting') live.add(i.id);
    const reserved = admission.reserved();
    return {
      hostId,
      controlUrl,
      dataUrl,
      at: Date.now(),
      capacity: { ...admission.capacity },
      reserved,
      free: admission.free(),
      load: { instances: agent.liveCount(), inFlight, requestsTotal },
      layers: layerCache
        .entries()
        .filter((e) => e.kind !== 'flat')
        .map((e) => ({ digest: e.digest, size: e.size, inUse: e.refs > 0 })),
      layerCache: { bytes: layerCache.totalBytes(), budgetBytes: layerCache.budgetBytes },
      drivers: await Promise.all(
        Object.values(drivers).map(async (d) => ({
          name: d.name,
          default: d.name === defaultDriver,
          capabilities: { ...d.capabilities },
          fingerprint: { ...(await fingerprint(d)) },
        })),
      ),
    };
  };

  const app = createControlApi({ agent, token: options.token, events, metrics, report });
  const controlServer = createServer(getRequestListener(app.fetch));
  let controlPort: number;
  try {
    controlPort = await listen(controlServer, options.listen.host, options.listen.port);
  } catch (e) {
    await closeServer(dataServer, forwarder.close);
    await agent.close({ stopInstances: false });
    releaseLock();
    throw e;
  }
  controlUrl = `http://${advertise(options.listen.host)}:${controlPort}`;
  log.info({ controlUrl, dataUrl, driver: defaultDriver, hostId }, 'host listening');

  let closing: Promise<void> | undefined;
  return {
    hostId,
    controlUrl,
    dataUrl,
    agent,
    events,
    layerCache,
    report,
    close(opts = {}) {
      closing ??= (async () => {
        // SSE streams never end by themselves: cut every connection after a short grace.
        await closeServer(controlServer, async () => {}, 200);
        await agent.close({ stopInstances: opts.stopInstances ?? true });
        await closeServer(dataServer, forwarder.close);
        await layerCache.settle();
        releaseLock();
        log.info({ hostId }, 'host stopped');
      })();
      return closing;
    },
  };
}

const lockedHere = new Set<string>();

/**
 * One host per data dir: a second one would re-adopt (and fight over) the first one's
 * instances. The lock file holds the owner's pid; a dead owner's lock is taken over.
 */
async function lockDataDir(dataDir: string): Promise<() => void> {
  const file = join(dataDir, 'host.lock');
  if (lockedHere.has(dataDir)) throw new ShoalError('conflict', `another host in this process already uses ${dataDir}`, { field: 'dataDir' });
  for (let attempt = 0; ; attempt++) {
    try {
      await writeFile(file, String(process.pid), { flag: 'wx', mode: 0o600 });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw e;
      const pid = Number((await readFile(file, 'utf8').catch(() => '')).trim());
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && isAlive(pid)) {
        throw new ShoalError('conflict', `host process ${pid} already uses ${dataDir} (${file})`, { field: 'dataDir' });
      }
      await unlink(file).catch(() => {});
    }
  }
  lockedHere.add(dataDir);
  let released = false;
  return () => {
    if (released) return;
    released = true;
    lockedHere.delete(dataDir);
    try {
      unlinkSync(file);
    } catch {
      // already gone
    }
  };
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function listen(server: Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

async function loadOrCreate(file: string, make: () => Buffer): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch {
    const value = make();
    await writeFile(file, value, { mode: 0o600, flag: 'wx' }).catch(async (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST') throw e;
    });
    await chmod(file, 0o600);
    return readFile(file);
  }
}
