// The provider part's door: startProvider() wires the registry, the host pool, the
// routing table, the activator, the deployer (with its claims, image resolver and
// cold-start state machine), the control plane, the reconciler, the scaler, the message
// router and the control API together, reconciles with the registry and the hosts, and
// listens. `shoal provider`, `shoal up` and the tests all start a provider this way.
// The cold path, with no loop back: router → activator (queue, Demand) → cold start →
// deployer → routing table; the table's onAdded is wired to the activator's release,
// and the released router chooses from the table.
import { checkBindAddress, parseAllowList, type TlsIdentity } from '../http/index.ts';
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import type { AddressInfo } from 'node:net';
import { createActivator } from './activator/index.ts';
import { createInFlightTracker } from './balancer/index.ts';
import { createClaims } from './claims.ts';
import { createColdStart } from './cold-start.ts';
import { createControlPlane } from './control-plane.ts';
import { createAccessLookup, createAuthGate, createFarmCredential, createRegistryVerifier } from './auth/index.ts';
import { migrateInstance } from './migration.ts';
import { logWriteFailure } from './write-failures.ts';
import { createLiveOpsApi } from './live-ops-api.ts';
import { forkInstance, restoreState, resumeInstance, snapshotInstance, suspendInstance, type LiveOpsDeps } from './live-ops.ts';
import { createDeployer, type DeployOutcome } from './deployer.ts';
import { createHostPool, type HostPool, type HostRegistrationRequest, type Logger, type PoolHost } from './host-pool.ts';
import { createProviderMetrics } from './metrics.ts';
import { createReconciler } from './reconciler.ts';
import { openRegistry, type Registry } from './registry/index.ts';
import { createRouter } from './router.ts';
import { compileService, createRoutingTable, type RemovalReason, type RouteEndpoint, type RoutingTable } from './routing-table.ts';
import { createScaler } from './scaler.ts';
import { createFarmEngine, type FarmEngine } from './intermediaries/farms.ts';
import { createProviderApi, createProviderServer, type MountedApp } from './server.ts';
import { createProviderDashboard } from './dashboard.ts';
import { createInstancesApi } from './instances-api.ts';
import { createImageResolver, createRegistryClient, resolveRemoteImage } from '../image/index.ts';
import { createForeignImages } from './foreign-images.ts';
import { createApiToken } from './auth/index.ts';
import { join } from 'node:path';
import { ShoalError, advertisedUrl } from '../protocol/index.ts';

export type { RouteEndpoint, RemovalReason, RoutingTable } from './routing-table.ts';
export type { PoolHost, HostRegistrationRequest, Logger } from './host-pool.ts';
export type { DeployOutcome } from './deployer.ts';
export type { Registry } from './registry/index.ts';
export type { MountedApp } from './server.ts';
export { openRegistry } from './registry/index.ts';
// Tokens, roles and the gate, for the CLI's roles (up, provider, store) and its token commands.
export * as auth from './auth/index.ts';
export { compileSchema, type SchemaCheck, type SchemaError } from './json-schema.ts';

export interface ProviderTuning {
  /** How often each host's report is fetched. Default 2000 ms. */
  reportIntervalMs?: number;
  /** Silent this long → suspect. Default 3 report intervals. */
  suspectAfterMs?: number;
  /** Silent this long → dead (its instances are moved). Default 8 report intervals. */
  deadAfterMs?: number;
  /** The scaling loop's period. Default 1000 ms. */
  scaleIntervalMs?: number;
  /** Autoscaler stable window before scaling down under load. Default 30 s. */
  stableWindowMs?: number;
  /** How often other providers' changes are read from the registry. Default 2000 ms. */
  syncIntervalMs?: number;
  /** Route tokens closer than this to expiry are re-signed by their host on the sync pass. Default 4 min. */
  tokenRefreshWithinMs?: number;
  /** Messages that may wait per cold service. Default 1000. */
  queueDepth?: number;
  /** Longest a message waits for an instance. Default 120 s. */
  queueTimeoutMs?: number;
  /** Deployment claim lease. Default 30 s. */
  leaseMs?: number;
  /** Attempts per cold start before cooling down. Default 3. */
  maxAttempts?: number;
  /** First backoff between attempts. Default 250 ms. */
  backoffMs?: number;
  /** Fail-fast period after maxAttempts failures. Default 10 s. */
  cooldownMs?: number;
  /** Largest message body. Default 10 MiB. */
  maxBodyBytes?: number;
  /** Longest an instance may stay silent on a message. Default 60 s. */
  requestTimeoutMs?: number;
  /** Retry-After hint on 503s, seconds. Default 1. */
  retryAfterSeconds?: number;
}

export interface ProviderOptions {
  listen: { host: string; port: number };
  /**
   * The registry: a postgres:// URL or a SQLite path (default: SHOAL_DATABASE_URL when
   * set, else ./.shoal/shoal.db). Ignored when `registry` is given.
   */
  database?: string;
  /** An open registry to use (the caller closes it). */
  registry?: Registry;
  /** The store hosts pull images from. Default: this provider's own URL (with `store` mounted). */
  storeUrl?: string;
  /** The store's app, served beside the provider on the same address (`shoal up`). */
  store?: MountedApp;
  /** An API token for reading the store (when it refuses anonymous pulls); asked for at first use. */
  storeToken?: () => string | undefined;
  /**
   * Images from other registries: where the credentials are kept (containers-auth.json
   * format, 0600; `shoal registry login` fills it). Default SHOAL_REGISTRY_AUTH_FILE, else
   * ./.shoal/registry-auth.json.
   */
  registryAuthFile?: string;
  /** Registries on private addresses that images may come from (host or host:port). Default SHOAL_REGISTRY_ALLOW_PRIVATE (comma-separated); others are refused. */
  registryAllowPrivate?: readonly string[];
  /**
   * A token that may push to the store, for copying images from other registries into it.
   * Default: with the store mounted (`store`), the provider makes a short-lived deploy token
   * in its own registry when it needs one; otherwise SHOAL_STORE_PUSH_TOKEN, else such
   * images are refused.
   */
  storePushToken?: () => string | undefined;
  /** Hosts register with this token (Authorization: Bearer). At least 8 characters. */
  joinToken: string;
  /** Stable across restarts so a restarted provider recognises its own claims. Default hostname:port. */
  providerId?: string;
  /** The address put in URLs when listening on a wildcard. */
  advertiseHost?: string;
  /** Serve HTTPS (required on a non-loopback address unless `insecure`). */
  tls?: TlsIdentity;
  /** Allow plain HTTP on a non-loopback address (a warning is logged). */
  insecure?: boolean;
  logger?: Logger;
  tuning?: ProviderTuning;
  version?: string;
  /** API tokens (src/provider/auth): they are always checked; these are the knobs. */
  auth?: {
    /** Image pulls from the mounted store without a token. Default true. */
    anonymousPull?: boolean;
    /** How long a token verdict may answer messages without the registry. Default 1000 ms. */
    cacheTtlMs?: number;
  };
}

export interface ProviderEvents {
  /** A message is being forwarded to an endpoint. */
  routed: [endpoint: RouteEndpoint, operation: string];
  /** An endpoint joined the routing set. */
  added: [endpoint: RouteEndpoint];
  /** An endpoint left the routing set. */
  removed: [endpoint: RouteEndpoint, reason: RemovalReason];
}

export interface Provider {
  readonly url: string;
  readonly providerId: string;
  readonly registry: Registry;
  readonly table: RoutingTable;
  /** Observe the routing set (tests, the dashboard). */
  readonly events: EventEmitter<ProviderEvents>;
  registerHost(request: HostRegistrationRequest): Promise<PoolHost>;
  /** Registers (validates, stores) a service; the same as POST /api/v1/services. */
  registerService(description: unknown): Promise<void>;
  /** Deploys `count` instances of a service now; resolves when they are ready (or failed). */
  deploy(service: string, count?: number): Promise<DeployOutcome>;
  hosts(): PoolHost[];
  /** Runs one host-report round now (tests use it instead of waiting for the timer). */
  pollHosts(): Promise<void>;
  /** Farms applied here (shoal/compose): their intermediaries and crash rules. */
  readonly farms: FarmEngine;
  /** Stops listening and every loop. Instances keep running (hosts own them). */
  close(): Promise<void>;
}

export async function startProvider(options: ProviderOptions): Promise<Provider> {
  const log: Logger = options.logger ?? { info() {}, warn() {}, error() {} };
  const t = options.tuning ?? {};
  if (options.joinToken.length < 8) throw new ShoalError('invalid', 'the join token must be at least 8 characters', { field: 'joinToken' });
  checkBindAddress('the provider', options.listen.host, { tls: options.tls !== undefined, insecure: options.insecure });
  const ownRegistry = options.registry === undefined;
  const registry = options.registry ?? (await openRegistry(registryLocation(options.database)));
  try {
    return await assemble(options, registry, ownRegistry, log, t);
  } catch (e) {
    if (ownRegistry) await registry.close().catch((err: unknown) => log.warn({ err: String(err) }, 'closing the registry after a failed start failed'));
    throw e;
  }
}

function registryLocation(database: string | undefined): { url?: string } {
  const url = database ?? process.env.SHOAL_DATABASE_URL;
  return url === undefined || url === '' ? {} : { url };
}

async function assemble(options: ProviderOptions, registry: Registry, ownRegistry: boolean, log: Logger, t: ProviderTuning): Promise<Provider> {
  const events = new EventEmitter<ProviderEvents>();
  const tracker = createInFlightTracker();
  const activator = createActivator({
    queueDepth: t.queueDepth ?? 1000,
    timeoutMs: t.queueTimeoutMs ?? 120_000,
    retryAfterSeconds: t.retryAfterSeconds ?? 1,
  });
  let poolRef: HostPool | undefined;
  const table = createRoutingTable({
    tracker,
    events: {
      onAdded: (ep) => {
        events.emit('added', ep);
        activator.release(ep.service); // the queue goes back to the router, which chooses
      },
      onRemoved: (ep, reason) => {
        // Its host refused the connection: place nothing there until it reports again.
        if (reason === 'unreachable') poolRef?.unreachable(ep.hostId);
        events.emit('removed', ep, reason);
      },
    },
  });

  // Listening comes after reconciling, so the URL is known only then; the store URL the
  // plans carry may be our own.
  const port = options.listen.port;
  const providerId = options.providerId ?? `${hostname()}:${port === 0 ? `ephemeral-${randomBytes(3).toString('hex')}` : port}`;
  let url = '';
  const storeUrlOf = () => options.storeUrl ?? url;
  let storeClient: ReturnType<typeof createRegistryClient> | undefined;
  let mirrorToken: { secret: string; until: number } | undefined;
  const foreignImages = createForeignImages({
    authFile: options.registryAuthFile ?? process.env.SHOAL_REGISTRY_AUTH_FILE ?? join('.shoal', 'registry-auth.json'),
    allowPrivate: options.registryAllowPrivate ?? parseAllowList(process.env.SHOAL_REGISTRY_ALLOW_PRIVATE),
    storeUrl: storeUrlOf,
    pushToken: async () => {
      const given = options.storePushToken?.() ?? process.env.SHOAL_STORE_PUSH_TOKEN;
      if (given !== undefined || options.store === undefined) return given;
      // Our own store: a deploy token of our own registry, made when first needed, valid
      // for an hour, replaced ten minutes before it ends (a copy may take a while).
      if (mirrorToken === undefined || mirrorToken.until - Date.now() < 600_000) {
        const made = await createApiToken(registry, { role: 'deploy', note: 'provider: copying images from other registries into its store', ttlSeconds: 3600 });
        mirrorToken = { secret: made.secret, until: Date.now() + 3600_000 };
      }
      return mirrorToken.secret;
    },
    log,
  });
  const images = createImageResolver({
    resolveWith: async (client, ref) => resolveRemoteImage(client, await foreignImages.storeRefFor(ref)),
    client: () => {
      const token = options.storeToken?.();
      return (storeClient ??= createRegistryClient({ baseUrl: storeUrlOf(), userAgent: `shoal-provider/${providerId}`, ...(token === undefined ? {} : { token }) }));
    },
    refreshAfterMs: 10_000,
    maxStaleMs: 600_000,
    log,
  });

  let metricsRef: ReturnType<typeof createProviderMetrics> | undefined;
  // The reconciler and the pool refer to each other through these callbacks.
  let reconcilerRef: ReturnType<typeof createReconciler> | undefined;
  const pool: HostPool = createHostPool({
    registry,
    log,
    ...(t.reportIntervalMs === undefined ? {} : { reportIntervalMs: t.reportIntervalMs }),
    ...(t.suspectAfterMs === undefined ? {} : { suspectAfterMs: t.suspectAfterMs }),
    ...(t.deadAfterMs === undefined ? {} : { deadAfterMs: t.deadAfterMs }),
    onEvent: (host, e) => reconcilerRef?.onInstanceEvent(host, e),
    onState: (host, from, to, decidedHere) => reconcilerRef?.onHostState(host, from, to, decidedHere),
    // A host (re-)registering may come back with instances, or without the ones on record.
    onRegistered: (host) => void reconcilerRef?.reconcileHost(host).catch((e: unknown) => log.warn({ host: host.id, err: String(e) }, 'reconciling a registered host failed')),
  });
  poolRef = pool;
  let farmsRef: FarmEngine | undefined;
  const leaseMs = t.leaseMs ?? 30_000;
  const readinessTimeoutMs = 60_000;
  /** Services a crash rule is restoring from a saved state (src/provider/intermediaries/farms.ts). */
  const restoring = new Map<string, Promise<unknown>>();
  const deployer = createDeployer({
    waitFor: (service) => restoring.get(service),
    resume: (instanceId) => resumeInstance(liveOps, instanceId),
    importsFor: (service) => farmsRef?.importsFor(service),
    registry,
    pool,
    table,
    tracker,
    claims: createClaims({ registry, providerId, log, leaseMs }),
    images,
    providerId,
    storeUrl: storeUrlOf,
    log,
    readinessTimeoutMs,
    metrics: {
      coldStart: (s) => metricsRef?.coldStart(s),
      deployment: (s, o, sec) => metricsRef?.deployment(s, o, sec),
      activation: (s, path) => metricsRef?.activation(s, path),
    },
  });
  const coldStart = createColdStart({
    attempt: (service, mode, exclude, timing) => deployer.attempt(service, mode, exclude, timing),
    follow: (record, deadline, signal) => deployer.follow(record, deadline, signal),
    fail: (service, reason) => activator.fail(service, reason),
    queued: (service) => activator.queued(service),
    exists: (service) => table.service(service) !== undefined,
    hasEndpoints: (service) => table.endpoints(service).length > 0,
    onColdStart: (s) => metricsRef?.coldStart(s),
    followMs: leaseMs + readinessTimeoutMs,
    log,
    ...(t.maxAttempts === undefined ? {} : { maxAttempts: t.maxAttempts }),
    ...(t.backoffMs === undefined ? {} : { backoffMs: t.backoffMs }),
    ...(t.cooldownMs === undefined ? {} : { cooldownMs: t.cooldownMs }),
  });
  activator.onDemand((d) => coldStart.onDemand(d));
  const control = createControlPlane({
    registry,
    table,
    pool,
    deployer,
    resetCooldown: (service) => coldStart.reset(service),
    failWaiting: (service, reason) => activator.fail(service, reason),
    pinImage: (image, field) => foreignImages.pin(image, field),
    log,
  });
  const reconciler = createReconciler({
    registry,
    pool,
    table,
    deployer,
    control,
    providerId,
    log,
    ...(t.syncIntervalMs === undefined ? {} : { syncIntervalMs: t.syncIntervalMs }),
    ...(t.tokenRefreshWithinMs === undefined ? {} : { refreshTokensWithinMs: t.tokenRefreshWithinMs }),
  });
  reconcilerRef = reconciler;
  const liveOps: LiveOpsDeps = { pool, table, registry, images, deployer, providerId, storeUrl: storeUrlOf, readinessTimeoutMs, log };
  const scaler = createScaler({
    table,
    tracker,
    activator,
    deployer,
    busy: (service) => coldStart.busy(service) || deployer.busy(service) || restoring.has(service),
    ownedBy: (ep) => ep.deployedBy === undefined || ep.deployedBy === providerId,
    traffic: { record: (reports) => registry.recordTraffic(providerId, reports), last: (ids) => registry.lastTraffic(ids) },
    fork: async (ep) => {
      await forkInstance(liveOps, ep.id);
    },
    suspend: async (ep, keepStateMs) => {
      await suspendInstance(liveOps, ep.id, { ttlMs: keepStateMs });
    },
    log,
    ...(t.scaleIntervalMs === undefined ? {} : { intervalMs: t.scaleIntervalMs }),
    ...(t.stableWindowMs === undefined ? {} : { stableWindowMs: t.stableWindowMs }),
  });
  const metrics = createProviderMetrics({
    queues: () => activator.stats().services.map((s) => ({ service: s.service, queued: s.queued })),
    endpoints: () => table.services().map((s) => ({ service: s.name, count: table.endpoints(s.name).length })),
    hosts: () => pool.list().map((h) => ({ state: h.state })),
    inFlight: () => tracker.total(),
  });
  metricsRef = metrics;

  // Unknown names may be another provider's new service: look once, remember misses briefly.
  const misses = new Map<string, number>();
  const router = createRouter({
    table,
    waiter: activator,
    tracker,
    ...(t.maxBodyBytes === undefined ? {} : { maxBodyBytes: t.maxBodyBytes }),
    ...(t.requestTimeoutMs === undefined ? {} : { timeoutMs: t.requestTimeoutMs }),
    async refreshRoute(ep) {
      // The host re-signs on every read of an instance (src/host/endpoints.ts).
      const info = await pool.get(ep.hostId)?.client.get(ep.id);
      if (info?.endpoint === undefined) return false;
      table.refresh(ep.id, info.endpoint);
      return true;
    },
    async resolveService(name) {
      const missed = misses.get(name);
      if (missed !== undefined && Date.now() - missed < 2000) return undefined;
      if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(name)) return undefined;
      const record = await registry.getService(name);
      if (record === undefined) {
        if (misses.size > 10_000) misses.clear();
        misses.set(name, Date.now());
        return undefined;
      }
      return table.putService(record.description);
    },
    hooks: {
      onRouted: (ep, op) => {
        if (events.listenerCount('routed') > 0) events.emit('routed', ep, op);
      },
      onReply: (ep) => {
        if (ep.firstReplyPending) deployer.firstReply(ep, performance.now());
      },
      onAnswered: (service, op, status, startedAt) => metrics.message(service, op, status, (performance.now() - startedAt) / 1000),
    },
  });
  const verifier = createRegistryVerifier({ tokens: registry, ...(options.auth?.cacheTtlMs === undefined ? {} : { cacheTtlMs: options.auth.cacheTtlMs }) });
  const api = createProviderApi({
    verifier,
    registry,
    table,
    pool,
    control,
    tracker,
    activator,
    metrics,
    joinToken: options.joinToken,
    providerId,
    version: options.version ?? '0.1.0',
    ...(options.store === undefined ? {} : { store: options.store }),
    registries: foreignImages,
    log,
    migrate: (id, o) => migrateInstance(liveOps, id, o),
  });
  api.route('/', createInstancesApi({ table, control, deployer }));
  api.route('/', createLiveOpsApi(liveOps));
  const dashboard = createProviderDashboard({ registry, verifier, secure: options.tls !== undefined, log });
  const farmCredential = createFarmCredential({ registry, providerId });
  const registerService = async (description: unknown): Promise<void> => {
    await control.registerService(description);
  };
  const farms = createFarmEngine({
    registry,
    providerUrl: () => url,
    token: farmCredential.current,
    registerService: async (d) => {
      await farmCredential.ensure();
      return registerService(d);
    },
    deploy: (service) => control.ensureInstance(service),
    canSnapshot: (driver) => driver !== undefined && pool.list().some((h) => h.report?.drivers.some((d) => d.name === driver && d.capabilities.canSnapshot) === true),
    snapshot: async (service, label) => {
      const ep = table.endpoints(service)[0];
      if (ep === undefined) throw new ShoalError('not-found', `farm snapshot ${label}: ${service} has no running instance`, { field: 'snapshots' });
      return snapshotInstance(liveOps, ep.id, { reason: 'farm', label });
    },
    restore: (service, label) => {
      // Called as the crash is heard: until it is done, scaling and cold starts of the
      // service wait for it (restoring) rather than start a fresh instance beside it.
      const done = (async () => {
        const newest = (await registry.listStates({ service, label, liveAt: Date.now() }))[0];
        if (newest === undefined) return false;
        if (table.endpoints(service).length === 0) await restoreState(liveOps, newest.id);
        return true;
      })();
      restoring.set(service, done);
      void done.finally(() => restoring.get(service) === done && restoring.delete(service)).catch(() => undefined);
      return done;
    },
    invoke: (service, operation, body, signal) => router.invoke(service, operation, body, signal),
    log,
    ...(t.maxBodyBytes === undefined ? {} : { maxBodyBytes: t.maxBodyBytes }),
    ...(t.requestTimeoutMs === undefined ? {} : { timeoutMs: t.requestTimeoutMs }),
  });
  farmsRef = farms;
  events.on('removed', (ep, reason) => farms.onInstanceGone(ep.service, reason));
  const gate = createAuthGate({
    verifier,
    ...(options.auth?.anonymousPull === undefined ? {} : { anonymousPull: options.auth.anonymousPull }),
    access: createAccessLookup({ table, registry, farms }),
    audit: (entry) => registry.appendAudit(entry),
    session: async (req) => {
      const v = await dashboard.session(req);
      return v === undefined || !v.ok ? v : { ok: true, principal: v.principal };
    },
    log,
  });
  const server = createProviderServer({ tls: options.tls, router, api, farms, gate, dashboard, ...(options.store === undefined ? {} : { store: options.store }) });

  await reconciler.reconcile();
  const boundPort = await new Promise<number>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.listen.port, options.listen.host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
  url = advertisedUrl(options.listen.host, boundPort, options.advertiseHost, options.tls !== undefined);
  await farms.restore();
  for (const s of table.services()) deployer.prepare(s.name);
  pool.start();
  reconciler.start();
  scaler.start();
  // Saved states past their keep time leave the registry (each expired row to one provider).
  // Their artifacts stay in the store until it is collected: the store has no per-manifest
  // delete for states yet (see the closing note of issue 15).
  const stateExpiry = setInterval(() => {
    void registry
      .expireStates(Date.now())
      .then((gone) => {
        for (const s of gone) void registry.appendEvent({ kind: 'state-expired', service: s.service, detail: { state: s.id, digest: s.digest, reason: s.reason } }).catch(logWriteFailure(log, 'the state-expired event', { state: s.id }));
      })
      .catch((e: unknown) => log.warn({ err: String(e) }, 'expiring saved states failed; trying again next minute'));
  }, 60_000);
  stateExpiry.unref();
  log.info({ url, providerId, registry: (await registry.info()).location, store: storeUrlOf() }, 'provider listening');

  let closing: Promise<void> | undefined;
  return {
    url,
    providerId,
    registry,
    table,
    events,
    registerHost: (req) => control.registerHost(req),
    registerService,
    farms,
    deploy: (service, count = 1) => control.deploy(service, { count }),
    hosts: () => pool.list(),
    pollHosts: () => pool.tick(),
    close() {
      closing ??= (async () => {
        clearInterval(stateExpiry);
        await scaler.close();
        await reconciler.close();
        activator.close();
        dashboard.close();
        // Together: a cold start waiting on a host's reply ends only when the deployer aborts it.
        await Promise.all([coldStart.close(), deployer.close()]);
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeIdleConnections();
          setTimeout(() => server.closeAllConnections(), 500).unref();
        });
        await pool.close();
        farms.close();
        if (ownRegistry) await registry.close();
        log.info({ providerId }, 'provider stopped');
      })();
      return closing;
    },
  };
}

/** Compiles a description's input schemas (throws on one that cannot check messages). */
export function checkDescription(description: Parameters<typeof compileService>[0]): void {
  compileService(description);
}
export { parseTtl } from './auth/token.ts';
