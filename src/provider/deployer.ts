// The deployer: turns a decision to deploy into ready endpoints.
//   resolve the image to a digest (the shared image resolver) → place (pure policy over
//   the latest host reports, deploy-plan.ts) → claim the service's one in-flight
//   deployment slot (claims.ts) → POST the plan to the host(s) → record the outcome
//   durably → put the endpoints into the routing table (which announces them; the wiring
//   releases the waiting messages).
// A loser of the claim does not deploy: `follow` watches the winner's deployment and
// routes to its endpoint once it is ready. What to do after each attempt (retry
// elsewhere, back off, cool down) is the cold-start state machine's (cold-start.ts).
import { randomUUID } from 'node:crypto';
import type { InFlightTracker } from './balancer/index.ts';
import type { AttemptResult } from './cold-start.ts';
import type { Claims } from './claims.ts';
import { choosePlacements, hostViews, planFor, requiredDriver } from './deploy-plan.ts';
import type { HostPool, Logger, PoolHost } from './host-pool.ts';
import type { DeploymentRecord, Registry, SavedStateRecord } from './registry/index.ts';
import type { RemovalReason, RouteEndpoint, RoutingTable, ServiceEntry } from './routing-table.ts';
import { abortableSleep } from './sleep.ts';
import { providerTimeline, withFirstReply, type Timing } from './timeline.ts';
import { conditionalWrite, logHostFailure, logWriteFailure } from './write-failures.ts';
import type { ImageResolver } from '../image/index.ts';
import type { DeploymentTimeline, ImportBinding, EndpointReference } from '../protocol/index.ts';
import { ShoalError, isShoalError } from '../protocol/index.ts';
import { chooseActivation, createCostEstimator, type ActivationCandidate, type ActivationChoice, type ActivationPath, type CostEstimator } from './activation/index.ts';

export type DeployReason = 'cold' | 'scale' | 'replace';

export interface DeployerMetrics {
  coldStart(service: string): void;
  /** A message with no warm instance was answered by this path (resume, restore, fork, cold). */
  activation?(service: string, path: ActivationPath): void;
  deployment(service: string, outcome: 'ready' | 'failed' | 'refused', seconds: number): void;
}

export interface DeployerOptions {
  registry: Registry;
  pool: HostPool;
  table: RoutingTable;
  tracker: InFlightTracker;
  claims: Claims;
  images: ImageResolver;
  providerId: string;
  /** The store hosts pull from (its URL goes into every plan; known once the provider listens). */
  storeUrl(): string;
  log: Logger;
  metrics?: DeployerMetrics;
  /** Longest an instance may take to become ready. Default 60 s. */
  readinessTimeoutMs?: number;
  /** Where a service's import sockets forward (farm instances: their intermediaries). */
  importsFor?(service: string): ImportBinding[] | undefined;
  /** Resumes a paused instance (the activation path `resume`); resolves with it routable again. */
  resume?(instanceId: string): Promise<RouteEndpoint>;
  /** The activation cost estimator (default: a fresh one). */
  costs?: CostEstimator;
  /** Work on the service that a deployment must wait for (a crash rule restoring its state). */
  waitFor?(service: string): Promise<unknown> | undefined;
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
  /** One cold-start attempt of one instance (the cold-start state machine's step). */
  attempt(service: string, mode: 'cold' | 'add', exclude: readonly string[], timing: Timing): Promise<AttemptResult>;
  /** Waits for another provider's deployment and routes to what it made: true when routed. */
  follow(record: DeploymentRecord, deadline: number, signal: AbortSignal): Promise<boolean>;
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
  /** A deploy() (not a cold start) of the service is under way. */
  busy(service: string): boolean;
  close(): Promise<void>;
}

type Attempt = DeployOutcome & { failedHosts: string[]; noHost?: string };

export function createDeployer(options: DeployerOptions): Deployer {
  const { registry, pool, table, tracker, claims, images, log } = options;
  const readinessTimeoutMs = options.readinessTimeoutMs ?? 60_000;
  const rand = options.rand ?? Math.random;
  const costs = options.costs ?? createCostEstimator();
  const active = new Map<string, Promise<unknown>>();
  /** Timelines of deployments whose first reply has not been recorded yet. */
  const pendingTimelines = new Map<string, { timeline: DeploymentTimeline; readyMs: number; t0: number }>();
  const controller = new AbortController();

  function endpointOf(ref: EndpointReference, deploymentId: string, host: PoolHost, version: string, deployedBy: string | undefined): RouteEndpoint {
    const u = new URL(ref.url);
    const hostname = u.hostname.replace(/^\[|\]$/g, '');
    const port = Number(u.port || (u.protocol === 'https:' ? 443 : 80));
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
      tokenLifetimeMs: Math.max(0, ref.expiresAt - Date.now()),
      link: host.client.dataLink(hostname, port, u.protocol),
      authority: u.host,
      readyAt: Date.now(),
      deployedBy,
      firstReplyPending: pendingTimelines.has(deploymentId),
    };
  }

  /**
   * Sends one plan; a host's refusal or failure is a result, not a throw. A host that
   * refuses the connection never saw the plan: it is kept out of placement until it
   * reports again, and the plan goes to another host at once (the messages waiting for
   * this deployment wait on, instead of hearing of a host that is gone).
   */
  async function send(entry: ServiceEntry, image: Awaited<ReturnType<ImageResolver['resolve']>>, first: { host: string; driver: string }, from?: SavedStateRecord) {
    let pick = first;
    for (let moved = 0; ; moved++) {
      const host = pool.get(pick.host);
      if (host === undefined) return { pick, error: `host ${pick.host} left the pool` };
      const started = performance.now();
      try {
        const plan = { ...planFor(entry, image, pick.driver, options.storeUrl(), readinessTimeoutMs, options.importsFor?.(entry.name)), ...(from === undefined ? {} : { from: from.digest }) };
        const result = await host.client.deploy(plan, controller.signal);
        return { pick, host, result, seconds: (performance.now() - started) / 1000 };
      } catch (e) {
        if (connectionRefused(e) && moved < 2) {
          pool.unreachable(host.id);
          const views = hostViews(pool.placeable(), table.endpoints(entry.name), from?.driver ?? requiredDriver(entry, image));
          const next = choosePlacements(entry, image, 1, [host.id], views, rand).picks[0];
          if (next !== undefined) {
            log.warn({ service: entry.name, host: host.id, to: next.host }, 'a host refused the connection; deploying on another');
            pick = next;
            continue;
          }
        }
        const refused = isShoalError(e) && e.code === 'conflict';
        options.metrics?.deployment(entry.name, refused ? 'refused' : 'failed', (performance.now() - started) / 1000);
        return { pick, error: (e as Error).message };
      }
    }
  }

  /**
   * One claim, `count` plans in parallel. Returns what became ready; throws nothing for a
   * host's refusal or failure (they are in `errors`, with the hosts in `failedHosts`).
   */
  async function run(entry: ServiceEntry, count: number, mode: 'cold' | 'add', exclude: readonly string[], timing: Timing): Promise<Attempt> {
    const placeStart = performance.now() - timing.t0;
    // A restore under way brings the instance back with its state: a claim after it finds it ready.
    await options.waitFor?.(entry.name)?.catch(() => undefined);
    const image = await images.resolve(entry.description.image);
    // A message with no warm instance: resume a paused one, restore the state a suspended one
    // left, or start cold — whichever has measured cheapest on the host it would use.
    const activation = mode === 'cold' && count === 1 ? await chooseColdPath(entry, image, exclude) : undefined;
    if (activation?.chosen.path === 'resume' && options.resume !== undefined) {
      const t = performance.now();
      try {
        const ep = await options.resume(activation.chosen.from!);
        activated(entry.name, activation, performance.now() - t);
        return { ready: [ep], deployments: [], errors: [], failedHosts: [] };
      } catch (e) {
        log.warn({ service: entry.name, instance: activation.chosen.from, err: (e as Error).message }, 'resuming a paused instance failed; starting another');
      }
    }
    const suspended = activation?.chosen.path === 'restore' ? activation.state : undefined;
    const views = hostViews(pool.placeable(), table.endpoints(entry.name), suspended?.driver ?? requiredDriver(entry, image));
    const { picks, refusal } = activation?.pick !== undefined && activation.chosen.path !== 'resume' ? { picks: [activation.pick], refusal: undefined } : choosePlacements(entry, image, count, exclude, views, rand);
    if (picks.length === 0) return { ready: [], deployments: [], errors: [refusal ?? 'no host'], failedHosts: [], noHost: refusal ?? 'no host' };
    const claim = await claims.claim({ service: entry.name, version: entry.version, mode, hostId: picks[0]!.host });
    if (!claim.claimed) return { ready: [], deployments: [], errors: [], failedHosts: [], deferred: claim.existing };
    const lease = claims.hold(claim.deployment.id);
    const sendMs = performance.now() - timing.t0;
    try {
      const sent = performance.now();
      const results = await Promise.all(picks.map((pick) => send(entry, image, pick, suspended)));
      if (activation !== undefined && results.some((r) => !('error' in r))) activated(entry.name, activation, performance.now() - sent);
      if (suspended !== undefined && results.some((r) => !('error' in r))) {
        // Consumed: the state is running again (a second cold start must not run it twice).
        await registry.removeState(suspended.id);
        void registry
          .appendEvent({ kind: 'restored', service: entry.name, detail: { state: suspended.id, digest: suspended.digest, from: suspended.sourceInstance, reason: 'first message after suspend' } })
          .catch(logWriteFailure(log, 'the restored event', { service: entry.name }));
      }
      const readyMs = performance.now() - timing.t0;
      const out: Attempt = { ready: [], deployments: [], errors: [], failedHosts: [] };
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
          const fields = { state: 'ready' as const, hostId: host.id, instanceId: result.instance.id, endpoint: result.endpoint, timeline };
          const record = useClaim
            ? await registry.updateDeployment(id, { ...fields, leaseUntil: null })
            : await registry.createDeployment({ id, service: entry.name, version: entry.version, claimedBy: options.providerId, ...fields });
          options.metrics?.deployment(entry.name, 'ready', r.seconds);
          pendingTimelines.set(id, { timeline, readyMs, t0: timing.t0 });
          out.ready.push(endpointOf(result.endpoint, id, host, entry.version, options.providerId));
          return record;
        }),
      );
      out.deployments.push(...records);
      // A host that failed may have failed on the image (a moved tag, a collected blob): resolve afresh next time.
      if (out.errors.length > 0) images.forget(entry.description.image);
      const now = table.service(entry.name);
      if (now === undefined || now.version !== entry.version) {
        // Removed or replaced by a new version while we deployed: what we made is not wanted.
        await Promise.all(out.deployments.filter((d) => d.state === 'ready').map((d) => stopDeployment(d, now === undefined ? 'service removed' : 'superseded by a new version')));
        out.ready = [];
        return out;
      }
      // Durable first, then routable: adding to the table releases the queue.
      for (const ep of out.ready) table.add(ep);
      const detail = { mode, ready: out.ready.map((e) => ({ instance: e.id, host: e.hostId })), errors: out.errors, placement: picks.map((p) => p.reason) };
      void registry.appendEvent({ kind: 'deployed', service: entry.name, detail }).catch(logWriteFailure(log, 'the deployed event', { service: entry.name }));
      return out;
    } catch (e) {
      // The registry failed us mid-way: give the slot back so the next attempt can claim it.
      await claims.giveBack(claim.deployment.id, (e as Error).message);
      throw e;
    } finally {
      lease.stop();
    }
  }

  type ColdPath = { chosen: ActivationCandidate; considered: ActivationChoice['considered']; pick?: { host: string; driver: string; reason: string }; state?: SavedStateRecord };

  /** The candidates for a message with no warm instance, and the cheapest by measured cost. */
  async function chooseColdPath(entry: ServiceEntry, image: Awaited<ReturnType<ImageResolver['resolve']>>, exclude: readonly string[]): Promise<ColdPath | undefined> {
    const driverKey = entry.description.driver ?? image.driver ?? 'default';
    const candidates: ActivationCandidate[] = [];
    for (const ep of table.paused(entry.name)) if (ep.version === entry.version) candidates.push({ path: 'resume', host: ep.hostId, driver: driverKey, from: ep.id });
    const state = (await registry.listStates({ service: entry.name, reason: 'suspend', liveAt: Date.now() })).find((s) => s.version === entry.version);
    const picks = new Map<ActivationCandidate, { host: string; driver: string; reason: string }>();
    // Up to three hosts per path, so the choice is also where (each host's own measurements).
    if (state !== undefined) {
      for (const p of choosePlacements(entry, image, 3, exclude, hostViews(pool.placeable(), table.endpoints(entry.name), state.driver), rand).picks) {
        const c: ActivationCandidate = { path: 'restore', host: p.host, driver: state.driver, from: state.id };
        candidates.push(c);
        picks.set(c, p);
      }
    }
    // A suspended instance's state is its memory: a cold start would lose it, so it is no
    // alternative while a restore can be placed (the choice is then where, and resume vs restore).
    const owed = candidates.some((c) => c.path === 'restore');
    for (const p of owed ? [] : choosePlacements(entry, image, 3, exclude, hostViews(pool.placeable(), table.endpoints(entry.name), requiredDriver(entry, image)), rand).picks) {
      const c: ActivationCandidate = { path: 'cold', host: p.host, driver: p.driver, from: image.manifestDigest };
      candidates.push(c);
      picks.set(c, p);
    }
    const choice = chooseActivation(candidates, (c) => costs.estimate(c));
    if (choice === undefined) return undefined;
    const chosen = candidates.find((c) => c.path === choice.choice.path && c.host === choice.choice.host && c.from === choice.choice.from)!;
    return { chosen, considered: choice.considered, ...(picks.has(chosen) ? { pick: picks.get(chosen)! } : {}), ...(chosen.path === 'restore' && state !== undefined ? { state } : {}) };
  }

  /** Feeds the estimator and records why and where the time went (cold-start attribution). */
  function activated(service: string, a: ColdPath, ms: number): void {
    costs.observe(a.chosen, ms);
    options.metrics?.activation?.(service, a.chosen.path);
    void registry
      .appendEvent({ kind: 'activated', service, hostId: a.chosen.host, detail: { path: a.chosen.path, host: a.chosen.host, driver: a.chosen.driver, ms: Math.round(ms), considered: a.considered.map((c) => ({ path: c.path, host: c.host, estimateMs: Math.round(c.estimateMs) })) } })
      .catch(logWriteFailure(log, 'the activated event', { service }));
  }

  /**
   * A ready deployment made elsewhere: its instance is routed to only as its host
   * describes it now. The record is a hint, never an address: it may name an instance
   * that stopped answering or a host that died or came back on another port, so the
   * host is asked (this is the cold path) and its fresh reference is used.
   */
  async function adoptReady(record: DeploymentRecord): Promise<RouteEndpoint | undefined> {
    const known = record.instanceId === undefined ? undefined : table.endpoint(record.instanceId);
    if (known) return known;
    if (record.hostId === undefined || record.instanceId === undefined) return undefined;
    // It just left routing (its connection refused, its socket gone, its host's verdict):
    // its host may not have judged it yet, so its word now would put it back. A new
    // instance is deployed instead (at worst one too many, which scaling down removes).
    if (table.removedAt(record.instanceId) !== undefined) return undefined;
    let host = pool.get(record.hostId);
    if (host === undefined) {
      await pool.load();
      host = pool.get(record.hostId);
    }
    if (host === undefined || host.state === 'dead') return undefined;
    const context = { deployment: record.id, instance: record.instanceId, host: host.id };
    let info: Awaited<ReturnType<typeof host.client.get>>;
    try {
      info = await host.client.get(record.instanceId);
    } catch (e) {
      // Not answering now (dead, or restarting): not routable, but not proof it is gone either.
      log.warn({ ...context, err: (e as Error).message }, 'the host of an instance another provider deployed does not answer; not routing to it');
      pool.unreachable(host.id);
      return undefined;
    }
    const ref = info?.state === 'ready' ? info.endpoint : undefined;
    if (ref === undefined) {
      await conditionalWrite(registry.updateDeployment(record.id, { state: 'stopped', error: `instance no longer ready on its host${info ? ` (it is ${info.state})` : ''}`, ifState: 'ready' }), log, 'marking a vanished instance stopped', context);
      return undefined;
    }
    const ep = endpointOf(ref, record.id, host, record.version, record.claimedBy);
    table.add(ep);
    return ep;
  }

  async function deploy(service: string, o: { count?: number; reason?: DeployReason; exclude?: readonly string[] }): Promise<DeployOutcome> {
    const entry = table.service(service);
    if (entry === undefined) throw new ShoalError('not-found', `no service named ${JSON.stringify(service)}`, { field: 'service' });
    const count = Math.max(1, Math.floor(o.count ?? 1));
    const timing = { t0: performance.now(), epoch: Date.now() };
    const p = run(entry, count, o.reason === 'cold' ? 'cold' : 'add', o.exclude ?? [], timing);
    active.set(service, p);
    try {
      const outcome = await p;
      if (outcome.noHost !== undefined) throw new ShoalError('unavailable', outcome.noHost, { field: 'placement' });
      return outcome;
    } finally {
      if (active.get(service) === p) active.delete(service);
    }
  }

  /** Marks a deployment stopped; a failed write is logged (the reconciler finds the record again). */
  function recordStopped(deploymentId: string, reason: string, context: object): Promise<unknown> {
    return registry.updateDeployment(deploymentId, { state: 'stopped', error: reason, leaseUntil: null }).catch(logWriteFailure(log, 'marking a deployment stopped', { deployment: deploymentId, ...context }));
  }

  async function stopDeployment(record: DeploymentRecord, reason: string): Promise<void> {
    if (record.instanceId !== undefined) {
      table.remove(record.instanceId, 'undeployed');
      const host = record.hostId === undefined ? undefined : pool.get(record.hostId);
      if (host !== undefined && host.state !== 'dead') await host.client.remove(record.instanceId).catch(logHostFailure(log, 'removing an instance', { instance: record.instanceId }));
    }
    await recordStopped(record.id, reason, { service: record.service });
    pendingTimelines.delete(record.id);
  }

  async function undeploy(ep: RouteEndpoint, reason: RemovalReason, o: { drainMs?: number } = {}): Promise<void> {
    table.remove(ep.id, reason);
    const until = Date.now() + (o.drainMs ?? 30_000);
    while (tracker.count(ep.id) > 0 && Date.now() < until) await abortableSleep(20);
    const host = pool.get(ep.hostId);
    if (host !== undefined && host.state !== 'dead') await host.client.remove(ep.id).catch(logHostFailure(log, 'removing an instance', { instance: ep.id }));
    await recordStopped(ep.deploymentId, reason, { service: ep.service, instance: ep.id });
    void registry
      .appendEvent({ kind: 'undeployed', service: ep.service, hostId: ep.hostId, instanceId: ep.id, detail: { reason } })
      .catch(logWriteFailure(log, 'the undeployed event', { service: ep.service, instance: ep.id }));
    pendingTimelines.delete(ep.deploymentId);
  }

  function firstReply(ep: RouteEndpoint, at: number): void {
    ep.firstReplyPending = false;
    const pending = pendingTimelines.get(ep.deploymentId);
    if (pending === undefined) return;
    pendingTimelines.delete(ep.deploymentId);
    const timeline = withFirstReply(pending.timeline, pending.readyMs, at - pending.t0);
    void registry.updateDeployment(ep.deploymentId, { timeline }).catch(logWriteFailure(log, 'the first reply in a timeline', { deployment: ep.deploymentId }));
  }

  return {
    async attempt(service, mode, exclude, timing) {
      const entry = table.service(service);
      if (entry === undefined) throw new ShoalError('not-found', `no service named ${JSON.stringify(service)}`, { field: 'service' });
      const out = await run(entry, 1, mode, exclude, timing);
      return {
        ready: out.ready.length,
        errors: out.errors,
        failedHosts: out.failedHosts,
        ...(out.noHost === undefined ? {} : { noHost: out.noHost }),
        ...(out.deferred === undefined ? {} : { deferred: out.deferred }),
      };
    },
    async follow(record, deadline, signal) {
      const ready = await claims.watch(record, deadline, signal);
      return ready !== undefined && (await adoptReady(ready)) !== undefined;
    },
    deploy,
    undeploy,
    stopDeployment,
    endpointOf,
    firstReply,
    prepare(service) {
      const entry = table.service(service);
      if (entry !== undefined) images.resolve(entry.description.image).catch((e: unknown) => log.warn({ service, image: entry.description.image, err: (e as Error).message }, 'cannot resolve the image of a service yet'));
    },
    busy: (service) => active.has(service),
    async close() {
      controller.abort();
      await Promise.allSettled([...active.values()]);
    },
  };
}

/** The host's address refused the connection (nothing listens there now): the plan never reached it. */
function connectionRefused(e: unknown): boolean {
  const cause = (e as { cause?: { code?: unknown } } | undefined)?.cause;
  return isShoalError(e) && e.code === 'unavailable' && cause?.code === 'ECONNREFUSED';
}
