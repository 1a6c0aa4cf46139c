// The deployer: turns a Demand (or a scaling decision) into ready endpoints.
//   resolve the image to a digest → place (pure policy over the latest host reports) →
//   claim the service's one in-flight deployment slot in the registry → POST the plan to
//   the host(s) → record the outcome durably → put the endpoints into the routing table,
//   which releases the waiting messages in order.
// The registry claim is what makes "one deployment per cold service" hold across several
// providers sharing a database: the loser does not deploy, it watches the winner's
// deployment in the registry and routes to its endpoint once it is ready.
// A failed attempt answers the waiting messages at once (503 with the reason, through
// activator.fail) and the next attempt goes to another host after a backoff; after
// maxAttempts the service cools down and demands fail fast until the cooldown ends.
import { randomUUID } from 'node:crypto';
import type { Activator, Demand } from './activator/index.ts';
import type { InFlightTracker } from './balancer/index.ts';
import type { HostPool, Logger, PoolHost } from './host-pool.ts';
import { place, type HostView, type PlacementRequest, type RequiredCapabilities } from './placement/index.ts';
import type { DeploymentRecord, Registry } from './registry/index.ts';
import type { RemovalReason, RouteEndpoint, RoutingTable, ServiceEntry } from './routing-table.ts';
import { resolveRemoteImage, type RegistryClient, type RemoteImage } from '../image/index.ts';
import type { DeploymentPlan, DeploymentTimeline, ImportBinding, EndpointReference, TimelinePhase } from '../protocol/deployment.ts';
import { ShoalError, isShoalError } from '../protocol/errors.ts';
import type { DriverName } from '../protocol/driver.ts';

export type DeployReason = 'cold' | 'scale' | 'replace';

export interface DeployerMetrics {
  coldStart(service: string): void;
  deployment(service: string, outcome: 'ready' | 'failed' | 'refused', seconds: number): void;
}

export interface DeployerOptions {
  registry: Registry;
  pool: HostPool;
  table: RoutingTable;
  activator: Pick<Activator<RouteEndpoint>, 'fail' | 'queued'>;
  tracker: InFlightTracker;
  providerId: string;
  /**
   * The store hosts pull from (its URL goes into every plan) and a client of it for
   * resolving image references to digests. Functions: a provider serving the store itself
   * knows its URL only once it listens.
   */
  store: { url(): string; client(): RegistryClient };
  log: Logger;
  metrics?: DeployerMetrics;
  /** How long a claim holds without renewal (a provider that dies mid-deploy loses it after this). Default 30 s. */
  leaseMs?: number;
  /** Attempts per demand before cooling down. Default 3. */
  maxAttempts?: number;
  /** First backoff between attempts; doubles each time. Default 250 ms. */
  backoffMs?: number;
  /** After maxAttempts failures, demands fail fast for this long. Default 10 s. */
  cooldownMs?: number;
  /** How often a provider that lost a claim looks at the winner's deployment. Default 50 ms. */
  watchIntervalMs?: number;
  /** A resolved image reference older than this is refreshed in the background. Default 10 s. */
  imageCacheMs?: number;
  /** …and older than this is resolved again before use. Default 10 min. */
  imageMaxStaleMs?: number;
  /** Longest an instance may take to become ready. Default 60 s. */
  readinessTimeoutMs?: number;
  /** Where a service's import sockets forward (farm instances: their intermediaries). */
  importsFor?(service: string): ImportBinding[] | undefined;
  rand?: () => number;
}

export interface DeployOutcome {
  /** Endpoints that became ready (in this provider's table now). */
  ready: RouteEndpoint[];
  /** Deployment records written by this call. */
  deployments: DeploymentRecord[];
  /** Why instances could not be deployed, if any failed. */
  errors: string[];
  /** Another provider's deployment was in flight or ready: nothing deployed here. */
  deferred?: DeploymentRecord;
}

export interface Deployer {
  /** The activator's Demand listener. */
  onDemand(demand: Demand): void;
  /**
   * Deploys `count` instances now (one registry claim, plans to `count` hosts in
   * parallel, spread across hosts when the policy allows). Used by scaling, replacement
   * and `POST /api/v1/services/:name/deployments`.
   */
  deploy(service: string, options: { count?: number; reason?: DeployReason; exclude?: readonly string[] }): Promise<DeployOutcome>;
  /** Takes an endpoint out of routing, lets its in-flight messages finish, removes the instance and marks the deployment stopped. */
  undeploy(endpoint: RouteEndpoint, reason: RemovalReason, options?: { drainMs?: number }): Promise<void>;
  /** Removes a recorded deployment's instance (by record) and marks it stopped. */
  stopDeployment(record: DeploymentRecord, reason: string): Promise<void>;
  /** Builds a routing endpoint from a registry record or a host's reference. */
  endpointOf(ref: EndpointReference, deploymentId: string, host: PoolHost, version: string, deployedBy: string | undefined): RouteEndpoint;
  /** Records the first reply through a new endpoint in its deployment's timeline. */
  firstReply(endpoint: RouteEndpoint, at: number): void;
  /** Resolves (and caches) a service's image ahead of its first deployment. */
  prepare(service: string): void;
  /** A service has a deployment under way from this provider. */
  busy(service: string): boolean;
  /** Forget cooldowns (a host was added, a service changed). */
  reset(service?: string): void;
  close(): Promise<void>;
}

interface ImageCacheEntry {
  at: number;
  value: Promise<RemoteImage>;
  settled: boolean;
  refreshing: boolean;
}

interface Timing {
  /** performance.now() when the demand arrived: the timeline's zero. */
  t0: number;
  /** Epoch ms at t0. */
  epoch: number;
}

export function createDeployer(options: DeployerOptions): Deployer {
  const { registry, pool, table, activator, tracker, log } = options;
  const leaseMs = options.leaseMs ?? 30_000;
  const maxAttempts = options.maxAttempts ?? 3;
  const backoffMs = options.backoffMs ?? 250;
  const cooldownMs = options.cooldownMs ?? 10_000;
  const watchMs = options.watchIntervalMs ?? 50;
  const imageCacheMs = options.imageCacheMs ?? 10_000;
  const imageMaxStaleMs = options.imageMaxStaleMs ?? 600_000;
  const readinessTimeoutMs = options.readinessTimeoutMs ?? 60_000;
  const rand = options.rand ?? Math.random;
  const active = new Map<string, Promise<unknown>>();
  const cooldown = new Map<string, { until: number; reason: string }>();
  const images = new Map<string, ImageCacheEntry>();
  /** Timelines of deployments whose first reply has not been recorded yet. */
  const pendingTimelines = new Map<string, { timeline: DeploymentTimeline; readyMs: number; t0: number }>();
  const controller = new AbortController();
  let closed = false;

  /**
   * Image reference → digest-pinned image, cached: a fresh entry is used as is, an older
   * one is used while a refresh runs in the background (so a cold start does not wait on
   * the store), and one past imageMaxStaleMs is resolved again before use.
   */
  function resolveImage(ref: string): Promise<RemoteImage> {
    const hit = images.get(ref);
    const now = Date.now();
    if (hit !== undefined) {
      if (!hit.settled) return hit.value;
      const age = now - hit.at;
      if (age < imageMaxStaleMs) {
        if (age >= imageCacheMs) refreshImage(ref, hit);
        return hit.value;
      }
    }
    return refreshImage(ref, undefined);
  }

  function refreshImage(ref: string, current: ImageCacheEntry | undefined): Promise<RemoteImage> {
    if (current?.refreshing) return current.value;
    const value = resolveRemoteImage(options.store.client(), ref);
    const entry: ImageCacheEntry = { at: Date.now(), value, settled: false, refreshing: false };
    if (current !== undefined) {
      // Keep serving the old resolution until the new one is in.
      current.refreshing = true;
      value.then(
        () => {
          entry.settled = true;
          images.set(ref, entry);
        },
        () => {
          current.refreshing = false;
        },
      );
      return current.value;
    }
    images.set(ref, entry);
    value.then(
      () => {
        entry.settled = true;
      },
      () => {
        if (images.get(ref) === entry) images.delete(ref);
      },
    );
    return value;
  }

  function hostViews(service: string, driver: DriverName | undefined): Map<string, HostView> {
    const replicas = new Map<string, number>();
    for (const ep of table.endpoints(service)) replicas.set(ep.hostId, (replicas.get(ep.hostId) ?? 0) + 1);
    const views = new Map<string, HostView>();
    for (const h of pool.placeable()) {
      const r = h.report!;
      views.set(h.id, {
        id: h.id,
        state: h.state,
        labels: h.labels,
        capacity: { ...r.capacity },
        free: { ...r.free },
        load: { instances: r.load.instances, inFlight: r.load.inFlight },
        cachedLayers: new Set(r.layers.map((l) => l.digest)),
        drivers: r.drivers
          .filter((d) => driver === undefined || d.name === driver)
          .map((d) => ({
            key: d.name,
            isDefault: d.default,
            healthy: d.fingerprint.healthy,
            capabilities: d.capabilities,
          })),
        replicas: replicas.get(h.id) ?? 0,
      });
    }
    return views;
  }

  function placementRequest(entry: ServiceEntry, image: RemoteImage, exclude: readonly string[]): PlacementRequest {
    const d = entry.description;
    const req = d.placement.requires;
    const capabilities: RequiredCapabilities | undefined =
      req === undefined
        ? undefined
        : {
            ...(req.isolation === undefined ? {} : { isolation: [req.isolation] }),
            ...(req.canPause === undefined ? {} : { canPause: req.canPause }),
            ...(req.canSnapshot === undefined ? {} : { canSnapshot: req.canSnapshot }),
            ...(req.canMigrate === undefined ? {} : { canMigrate: req.canMigrate }),
            ...(req.canClone === undefined ? {} : { canClone: req.canClone }),
          };
    return {
      service: d.name,
      resources: { memoryMb: d.resources.memoryMb, cpuMillis: d.resources.cpuMillis },
      layers: image.layers.map((l) => ({ digest: l.digest, size: l.size })),
      placement: {
        ...(d.placement.policy === undefined ? (d.placement.hosts ? { policy: 'host-list' as const } : {}) : { policy: d.placement.policy }),
        ...(d.placement.hosts === undefined ? {} : { hosts: d.placement.hosts }),
        ...(d.placement.labels === undefined ? {} : { labels: d.placement.labels }),
        ...(capabilities === undefined ? {} : { capabilities }),
      },
      exclude,
    };
  }

  /** Chooses up to `count` hosts, updating the views as if each placement happened. */
  function choose(entry: ServiceEntry, image: RemoteImage, count: number, exclude: readonly string[]) {
    const views = hostViews(entry.name, entry.description.driver);
    const picks: Array<{ host: string; driver: string; reason: string }> = [];
    let refusal: string | undefined;
    for (let i = 0; i < count; i++) {
      // With several replicas at once, prefer distinct hosts: spread unless told otherwise.
      const req = placementRequest(entry, image, exclude);
      if (count > 1 && req.placement.policy === undefined) req.placement.policy = 'spread';
      const decision = place(req, [...views.values()], rand);
      if (!decision.ok) {
        refusal = decision.message;
        break;
      }
      picks.push({ host: decision.host, driver: decision.driver, reason: decision.reason });
      const v = views.get(decision.host)!;
      const { memoryMb, cpuMillis } = entry.description.resources;
      views.set(decision.host, {
        ...v,
        replicas: v.replicas + 1,
        free: { memoryMb: v.free.memoryMb - memoryMb, cpuMillis: v.free.cpuMillis - cpuMillis, instances: v.free.instances - 1 },
        load: { ...v.load, instances: v.load.instances + 1 },
      });
    }
    return { picks, refusal };
  }

  function planFor(entry: ServiceEntry, image: RemoteImage, driver: string): DeploymentPlan {
    const d = entry.description;
    const imports = options.importsFor?.(d.name);
    return {
      service: { name: d.name, version: d.version },
      image: `${image.repository}@${image.manifestDigest}`,
      store: options.store.url(),
      driver,
      resources: { ...d.resources },
      readiness: { timeoutMs: readinessTimeoutMs },
      ...(imports === undefined || imports.length === 0 ? {} : { imports }),
    };
  }

  function endpointOf(ref: EndpointReference, deploymentId: string, host: PoolHost, version: string, deployedBy: string | undefined): RouteEndpoint {
    const u = new URL(ref.url);
    const hostname = u.hostname.replace(/^\[|\]$/g, '');
    const port = Number(u.port || 80);
    return {
      id: ref.instance,
      service: ref.service.name,
      version,
      deploymentId,
      hostId: host.id,
      hostname,
      port,
      pathPrefix: u.pathname.replace(/\/$/, ''),
      token: ref.token,
      expiresAt: ref.expiresAt,
      link: host.client.dataLink(hostname, port),
      authority: u.host,
      readyAt: Date.now(),
      deployedBy,
      firstReplyPending: pendingTimelines.has(deploymentId),
    };
  }

  /**
   * One claim, `count` plans in parallel. Returns what became ready; throws nothing for a
   * host's refusal or failure (they are in `errors`, with the hosts in `failedHosts`).
   */
  async function attempt(
    entry: ServiceEntry,
    count: number,
    mode: 'cold' | 'add',
    exclude: readonly string[],
    timing: Timing,
  ): Promise<DeployOutcome & { failedHosts: string[]; noHost?: string }> {
    const placeStart = performance.now() - timing.t0;
    const image = await resolveImage(entry.description.image);
    const { picks, refusal } = choose(entry, image, count, exclude);
    if (picks.length === 0) return { ready: [], deployments: [], errors: [refusal ?? 'no host'], failedHosts: [], noHost: refusal ?? 'no host' };
    const claim = await registry.claimDeployment({
      service: entry.name,
      version: entry.version,
      providerId: options.providerId,
      now: Date.now(),
      leaseMs,
      mode,
      hostId: picks[0]!.host,
    });
    if (!claim.claimed) return { ready: [], deployments: [], errors: [], failedHosts: [], deferred: claim.existing };
    if (claim.tookOver) log.warn({ service: entry.name, deployment: claim.tookOver.id }, 'took over an expired deployment claim');
    const renew = setInterval(() => {
      registry.renewClaim(claim.deployment.id, options.providerId, Date.now(), leaseMs).catch(() => undefined);
    }, Math.max(1000, leaseMs / 3));
    renew.unref();
    const sendMs = performance.now() - timing.t0;
    try {
      const results = await Promise.all(
        picks.map(async (pick) => {
          const host = pool.get(pick.host);
          if (host === undefined) return { pick, error: `host ${pick.host} left the pool` };
          const started = performance.now();
          try {
            const result = await host.client.deploy(planFor(entry, image, pick.driver), controller.signal);
            return { pick, host, result, seconds: (performance.now() - started) / 1000 };
          } catch (e) {
            const refused = isShoalError(e) && e.code === 'conflict';
            options.metrics?.deployment(entry.name, refused ? 'refused' : 'failed', (performance.now() - started) / 1000);
            return { pick, error: (e as Error).message, refused };
          }
        }),
      );
      const readyMs = performance.now() - timing.t0;
      const out: DeployOutcome & { failedHosts: string[] } = { ready: [], deployments: [], errors: [], failedHosts: [] };
      let claimUsed = false;
      const records = await Promise.all(
        results.map(async (r) => {
          const useClaim = !claimUsed;
          claimUsed = true;
          const id = useClaim ? claim.deployment.id : randomUUID();
          if ('error' in r) {
            out.errors.push(`${r.pick.host}: ${r.error}`);
            out.failedHosts.push(r.pick.host);
            const patch = { state: 'failed' as const, hostId: r.pick.host, error: r.error!, leaseUntil: null };
            return useClaim
              ? registry.updateDeployment(id, patch)
              : registry.createDeployment({ id, service: entry.name, version: entry.version, state: 'failed', hostId: r.pick.host, error: r.error!, claimedBy: options.providerId });
          }
          const { result, host } = r;
          const timeline = providerTimeline(timing, placeStart, sendMs, readyMs, result.timeline);
          const fields = {
            state: 'ready' as const,
            hostId: host.id,
            instanceId: result.instance.id,
            endpoint: result.endpoint,
            timeline,
          };
          const record = useClaim
            ? await registry.updateDeployment(id, { ...fields, leaseUntil: null })
            : await registry.createDeployment({ id, service: entry.name, version: entry.version, claimedBy: options.providerId, ...fields });
          options.metrics?.deployment(entry.name, 'ready', r.seconds);
          pendingTimelines.set(id, { timeline, readyMs, t0: timing.t0 });
          const ep = endpointOf(result.endpoint, id, host, entry.version, options.providerId);
          out.ready.push(ep);
          return record;
        }),
      );
      out.deployments.push(...records);
      // A host that failed may have failed on the image (a moved tag, a collected blob): resolve afresh next time.
      if (out.errors.length > 0) images.delete(entry.description.image);
      const now = table.service(entry.name);
      if (now === undefined || now.version !== entry.version) {
        // Removed or replaced by a new version while we deployed: what we made is not wanted.
        await Promise.all(out.deployments.filter((d) => d.state === 'ready').map((d) => stopDeployment(d, now === undefined ? 'service removed' : 'superseded by a new version')));
        out.ready = [];
        return out;
      }
      // Durable first, then routable: the queue is released by table.add.
      for (const ep of out.ready) table.add(ep);
      void registry
        .appendEvent({
          kind: 'deployed',
          service: entry.name,
          detail: { mode, ready: out.ready.map((e) => ({ instance: e.id, host: e.hostId })), errors: out.errors, placement: picks.map((p) => p.reason) },
        })
        .catch(() => undefined);
      return out;
    } catch (e) {
      // The registry failed us mid-way: give the slot back so the next attempt can claim it.
      await registry.updateDeployment(claim.deployment.id, { state: 'failed', error: `provider error: ${(e as Error).message}`, leaseUntil: null, ifState: ['pending', 'deploying'] }).catch(() => undefined);
      throw e;
    } finally {
      clearInterval(renew);
    }
  }

  /** Another provider's deployment holds the slot: wait for it, then route to what it made. */
  async function follow(existing: DeploymentRecord, deadline: number): Promise<RouteEndpoint | 'retry'> {
    let record: DeploymentRecord | undefined = existing;
    while (!closed) {
      if (record === undefined || record.state === 'failed' || record.state === 'stopped') return 'retry';
      if (record.state === 'ready') {
        const ep = await adoptReady(record);
        return ep ?? 'retry';
      }
      if (Date.now() > deadline) return 'retry';
      await sleep(watchMs, controller.signal);
      record = await registry.getDeployment(record.id);
    }
    return 'retry';
  }

  /** A ready deployment made elsewhere: check its instance is there, then route to it. */
  async function adoptReady(record: DeploymentRecord): Promise<RouteEndpoint | undefined> {
    const known = record.instanceId === undefined ? undefined : table.endpoint(record.instanceId);
    if (known) return known;
    if (record.hostId === undefined || record.instanceId === undefined) return undefined;
    let host = pool.get(record.hostId);
    if (host === undefined) {
      await pool.load();
      host = pool.get(record.hostId);
    }
    if (host === undefined || host.state === 'dead') return undefined;
    let ref = record.endpoint;
    if (ref === undefined || ref.expiresAt - Date.now() < 60_000) {
      const info = await host.client.get(record.instanceId).catch(() => undefined);
      ref = info?.state === 'ready' ? info.endpoint : undefined;
      if (ref === undefined) {
        await registry.updateDeployment(record.id, { state: 'stopped', error: 'instance no longer on its host', ifState: 'ready' }).catch(() => undefined);
        return undefined;
      }
    }
    const ep = endpointOf(ref, record.id, host, record.version, record.claimedBy);
    table.add(ep);
    return ep;
  }

  async function runCold(service: string, timing: Timing): Promise<void> {
    const exclude: string[] = [];
    let delay = backoffMs;
    let last = '';
    let skipReady = false;
    let follows = 0;
    for (let n = 0; n < maxAttempts && !closed; ) {
      const entry = table.service(service);
      if (entry === undefined) {
        activator.fail(service, `service ${service} was removed`);
        return;
      }
      let outcome: Awaited<ReturnType<typeof attempt>>;
      try {
        // After a ready deployment elsewhere turned out unusable (its host is gone from
        // here), claim regardless of ready ones ('add'): it would be found again otherwise.
        outcome = await attempt(entry, 1, skipReady ? 'add' : 'cold', exclude, timing);
      } catch (e) {
        last = (e as Error).message;
        log.error({ service, err: last }, 'deployment attempt failed');
        activator.fail(service, last);
        n++;
        await sleep(delay, controller.signal);
        delay *= 2;
        continue;
      }
      if (outcome.deferred) {
        const wasReady = outcome.deferred.state === 'ready';
        const got = await follow(outcome.deferred, Date.now() + leaseMs + readinessTimeoutMs);
        if (got !== 'retry') return;
        if (wasReady) skipReady = true;
        if (++follows > maxAttempts * 4) {
          last = 'other providers keep holding the deployment slot without a usable result';
          activator.fail(service, last);
          break;
        }
        await sleep(watchMs, controller.signal);
        continue; // the other provider's attempt failed or vanished: claim again (not counted)
      }
      if (outcome.ready.length > 0) {
        cooldown.delete(service);
        return;
      }
      if (outcome.noHost !== undefined) {
        if (exclude.length > 0) {
          // Every host that could take it has failed once: try them all again (the
          // backoff after the last failure has already passed).
          exclude.length = 0;
          continue;
        }
        last = outcome.noHost;
        activator.fail(service, last);
        break;
      }
      exclude.push(...outcome.failedHosts);
      last = outcome.errors.join('; ');
      n++;
      const more = n < maxAttempts;
      activator.fail(service, more ? `${last} (retrying on another host in ${delay} ms)` : last);
      log.warn({ service, attempt: n, error: last }, 'deployment failed');
      if (!more) break;
      await sleep(delay, controller.signal);
      delay *= 2;
    }
    if (!closed && last !== '') cooldown.set(service, { until: Date.now() + cooldownMs, reason: last });
  }

  function onDemand(demand: Demand): void {
    const { service } = demand;
    if (closed || active.has(service)) return;
    const cool = cooldown.get(service);
    if (cool !== undefined) {
      if (Date.now() < cool.until) {
        activator.fail(service, `${cool.reason} (deployment paused for ${Math.ceil((cool.until - Date.now()) / 1000)} s after ${maxAttempts} failed attempts)`);
        return;
      }
      cooldown.delete(service);
    }
    options.metrics?.coldStart(service);
    const timing = { t0: performance.now(), epoch: Date.now() };
    const run = runCold(service, timing)
      .catch((e: unknown) => {
        log.error({ service, err: String(e) }, 'cold deployment failed');
        activator.fail(service, (e as Error).message);
      })
      .finally(() => {
        if (active.get(service) === run) active.delete(service);
        // Messages that arrived after a failure and found the slot busy still need a demand.
        if (!closed && activator.queued(service) > 0 && table.endpoints(service).length === 0) {
          activator.fail(service, cooldown.get(service)?.reason ?? 'deployment did not complete');
        }
      });
    active.set(service, run);
  }

  async function deploy(service: string, o: { count?: number; reason?: DeployReason; exclude?: readonly string[] }): Promise<DeployOutcome> {
    const entry = table.service(service);
    if (entry === undefined) throw new ShoalError('not-found', `no service named ${JSON.stringify(service)}`, { field: 'service' });
    const count = Math.max(1, Math.floor(o.count ?? 1));
    const timing = { t0: performance.now(), epoch: Date.now() };
    const run = attempt(entry, count, o.reason === 'cold' ? 'cold' : 'add', o.exclude ?? [], timing);
    const key = `${service}\u0000scale`;
    active.set(key, run);
    try {
      const outcome = await run;
      if (outcome.noHost !== undefined) throw new ShoalError('unavailable', outcome.noHost, { field: 'placement' });
      return outcome;
    } finally {
      if (active.get(key) === run) active.delete(key);
    }
  }

  async function stopDeployment(record: DeploymentRecord, reason: string): Promise<void> {
    if (record.instanceId !== undefined) {
      table.remove(record.instanceId, 'undeployed');
      const host = record.hostId === undefined ? undefined : pool.get(record.hostId);
      if (host !== undefined && host.state !== 'dead') await host.client.remove(record.instanceId).catch((e: unknown) => log.warn({ err: String(e), instance: record.instanceId }, 'removing an instance failed'));
    }
    await registry.updateDeployment(record.id, { state: 'stopped', error: reason, leaseUntil: null }).catch(() => undefined);
    pendingTimelines.delete(record.id);
  }

  async function undeploy(ep: RouteEndpoint, reason: RemovalReason, o: { drainMs?: number } = {}): Promise<void> {
    table.remove(ep.id, reason);
    const until = Date.now() + (o.drainMs ?? 30_000);
    while (tracker.count(ep.id) > 0 && Date.now() < until) await sleep(20);
    const host = pool.get(ep.hostId);
    if (host !== undefined && host.state !== 'dead') await host.client.remove(ep.id).catch((e: unknown) => log.warn({ err: String(e), instance: ep.id }, 'removing an instance failed'));
    await registry.updateDeployment(ep.deploymentId, { state: 'stopped', error: reason, leaseUntil: null }).catch(() => undefined);
    void registry.appendEvent({ kind: 'undeployed', service: ep.service, hostId: ep.hostId, instanceId: ep.id, detail: { reason } }).catch(() => undefined);
    pendingTimelines.delete(ep.deploymentId);
  }

  function firstReply(ep: RouteEndpoint, at: number): void {
    ep.firstReplyPending = false;
    const pending = pendingTimelines.get(ep.deploymentId);
    if (pending === undefined) return;
    pendingTimelines.delete(ep.deploymentId);
    const endMs = at - pending.t0;
    const timeline: DeploymentTimeline = {
      ...pending.timeline,
      phases: [...pending.timeline.phases, { name: 'first-reply', startMs: round(pending.readyMs), endMs: round(Math.max(endMs, pending.readyMs)) }],
      totalMs: round(Math.max(endMs, pending.readyMs)),
    };
    void registry.updateDeployment(ep.deploymentId, { timeline }).catch(() => undefined);
  }

  return {
    onDemand,
    deploy,
    undeploy,
    stopDeployment,
    endpointOf,
    firstReply,
    prepare(service) {
      const entry = table.service(service);
      if (entry !== undefined) resolveImage(entry.description.image).catch((e: unknown) => log.warn({ service, image: entry.description.image, err: (e as Error).message }, 'cannot resolve the image of a service yet'));
    },
    busy: (service) => active.has(service) || active.has(`${service}\u0000scale`),
    reset(service) {
      if (service === undefined) cooldown.clear();
      else cooldown.delete(service);
    },
    async close() {
      closed = true;
      controller.abort();
      await Promise.allSettled([...active.values()]);
    },
  };
}

/**
 * The deployment's timeline from the provider's side: queue (demand → placement),
 * place (resolve, place, claim), then the host's own phases shifted to when the plan
 * was sent (the provider's clock, so hosts with skewed clocks still line up).
 */
export function providerTimeline(timing: Timing, placeStart: number, sendMs: number, readyMs: number, host: DeploymentTimeline): DeploymentTimeline {
  const phases: TimelinePhase[] = [
    { name: 'queue', startMs: 0, endMs: round(placeStart) },
    { name: 'place', startMs: round(placeStart), endMs: round(sendMs) },
    ...host.phases.map((p) => ({ name: p.name, startMs: round(sendMs + p.startMs), endMs: round(sendMs + p.endMs) })),
  ];
  return { startedAt: timing.epoch, phases, pull: host.pull, totalMs: round(readyMs) };
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(resolve, ms);
    signal?.addEventListener(
      'abort',
      () => {
        clearTimeout(t);
        resolve();
      },
      { once: true },
    );
  });
}
