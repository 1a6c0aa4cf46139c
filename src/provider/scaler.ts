// The scaling loop: every intervalMs, for each service, the pure autoscaler turns this
// provider's view of the load (in-flight and queued messages, ready instances, the time
// of the last message) into a replica count; the loop then asks the deployer for more
// instances or undeploys the least busy ones (drained first). Scale to zero is the
// autoscaler saying 0 after the idle timeout; the next message brings the service back
// through the activator.
//
// With several providers on one database each sees only its own traffic, so each scales
// down only the instances it deployed itself, and each reports the traffic it routes
// (`traffic`): a provider does not scale to zero an instance another provider still
// sends messages to. A service whose scaling says `idle: 'suspend'` has its last
// instance suspended (state saved, host freed) rather than stopped.
import { desiredReplicas, type ScaleSample } from './autoscaler/index.ts';
import type { Activator } from './activator/index.ts';
import type { InFlightTracker } from './balancer/index.ts';
import type { Deployer } from './deployer.ts';
import type { Logger } from './logger.ts';
import type { RouteEndpoint, RoutingTable } from './routing-table.ts';

export interface ScalerOptions {
  table: RoutingTable;
  tracker: InFlightTracker;
  activator: Pick<Activator, 'queued'>;
  deployer: Pick<Deployer, 'deploy' | 'undeploy'>;
  /** A deployment of the service (cold start or deploy()) is under way. */
  busy(service: string): boolean;
  /** Endpoints this provider deployed (only those are scaled down here). */
  ownedBy(endpoint: RouteEndpoint): boolean;
  log: Logger;
  /** Cluster-wide traffic (the registry's): what this provider routed, and the newest message any provider routed. */
  traffic?: {
    record(reports: Array<{ instanceId: string; lastMessageAt: number; messages: number }>): Promise<void>;
    last(instanceIds: readonly string[]): Promise<Map<string, number>>;
  };
  /** Scaling to zero a service with `idle: 'suspend'`: saves the instance's state and removes it; rejects when its driver cannot. */
  suspend?(endpoint: RouteEndpoint, keepStateMs: number): Promise<void>;
  /**
   * Scaling out by copying a warm instance (drivers that can fork: its memory, warm caches
   * and all) instead of a cold start; rejects when the instance's driver cannot, and the
   * loop deploys from the image instead.
   */
  fork?(source: RouteEndpoint): Promise<void>;
  /** How often this provider's traffic is written (default 2 s, only for services that had messages). */
  trafficReportMs?: number;
  intervalMs?: number;
  /** Autoscaler's stable window for scaling down under load. Default 30 s. */
  stableWindowMs?: number;
  now?: () => number;
}

export interface Scaler {
  /** One pass over every service (what the timer runs). */
  tick(): Promise<void>;
  start(): void;
  close(): Promise<void>;
}

export function createScaler(options: ScalerOptions): Scaler {
  const { table, tracker, activator, deployer, log } = options;
  const intervalMs = options.intervalMs ?? 1000;
  const now = options.now ?? Date.now;
  const history = new Map<string, ScaleSample[]>();
  const startedAt = now();
  const trafficReportMs = options.trafficReportMs ?? 2000;
  /** Per service: the last message time already reported, and when the last report went out. */
  const reported = new Map<string, { lastMessageAt: number; at: number }>();
  const work = new Set<Promise<unknown>>();
  let timer: ReturnType<typeof setInterval> | undefined;
  let running: Promise<void> | undefined;
  let closed = false;

  const track = (p: Promise<unknown>) => {
    work.add(p);
    // Each tracked task logs its own failure; this only forgets it once settled.
    void p.then(
      () => work.delete(p),
      () => work.delete(p),
    );
  };

  /** Writes this provider's traffic for services with messages since the last report. */
  function reportTraffic(t: number): void {
    if (options.traffic === undefined) return;
    const reports: Array<{ instanceId: string; lastMessageAt: number; messages: number }> = [];
    for (const entry of table.services()) {
      const last = table.lastMessageAt(entry.name);
      const r = reported.get(entry.name);
      if (last === 0 || (r !== undefined && (r.lastMessageAt >= last || t - r.at < trafficReportMs))) continue;
      reported.set(entry.name, { lastMessageAt: last, at: t });
      for (const ep of table.endpoints(entry.name)) reports.push({ instanceId: ep.id, lastMessageAt: last, messages: 1 });
    }
    if (reports.length > 0) track(options.traffic.record(reports).catch((e: unknown) => log.warn({ err: String(e) }, 'recording this provider traffic failed')));
  }

  /** Whether another provider sent the service's instances a message within its idle timeout. */
  async function busyElsewhere(victims: readonly RouteEndpoint[], idleTimeoutMs: number, t: number): Promise<boolean> {
    if (options.traffic === undefined || victims.length === 0) return false;
    try {
      const last = await options.traffic.last(victims.map((v) => v.id));
      return [...last.values()].some((at) => t - at < idleTimeoutMs);
    } catch (e) {
      // Unknown is not idle: keep the instances rather than stop ones another provider uses.
      log.warn({ err: String(e) }, 'reading the traffic other providers saw failed; not scaling to zero now');
      return true;
    }
  }

  function scaleToZero(name: string, ep: RouteEndpoint, scaling: { idle: 'stop' | 'suspend'; keepStateMs: number }): Promise<void> {
    if (scaling.idle === 'suspend' && options.suspend !== undefined) {
      return options.suspend(ep, scaling.keepStateMs).catch((e: unknown) => {
        log.warn({ service: name, instance: ep.id, err: (e as Error).message }, 'suspending an idle instance failed; stopping it instead');
        return deployer.undeploy(ep, 'scaled-down');
      });
    }
    return deployer.undeploy(ep, 'scaled-down');
  }

  const forking = new Set<string>();

  /** Forks the least busy warm instance `count` times where its driver can; deploys the rest from the image. */
  async function scaleOut(name: string, eps: readonly RouteEndpoint[], count: number): Promise<void> {
    let left = count;
    if (options.fork !== undefined && eps.length > 0) {
      forking.add(name);
      try {
        const source = [...eps].sort((a, b) => tracker.count(a.id) - tracker.count(b.id))[0]!;
        while (left > 0) {
          try {
            await options.fork(source);
            left--;
          } catch (e) {
            log.info({ service: name, instance: source.id, err: (e as Error).message }, 'scaling out by fork is not possible; deploying from the image');
            break;
          }
        }
      } finally {
        forking.delete(name);
      }
    }
    if (left > 0) await deployer.deploy(name, { count: left, reason: 'scale' });
  }

  function tick(): Promise<void> {
    if (running) return running;
    running = (async () => {
      const t = now();
      reportTraffic(t);
      for (const entry of table.services()) {
        if (closed) return;
        const name = entry.name;
        const eps = table.endpoints(name);
        let inFlight = activator.queued(name);
        for (const ep of eps) inFlight += tracker.count(ep.id);
        // An instance that came up without a message (min, replacement) counts as fresh activity.
        let last = table.lastMessageAt(name);
        for (const ep of eps) if (ep.readyAt > last) last = ep.readyAt;
        if (last === 0) last = startedAt;
        const busy = options.busy(name) || forking.has(name);
        const decision = desiredReplicas(
          { inFlight, ready: eps.length, pending: busy ? 1 : 0, lastRequestAt: last },
          { ...entry.description.scaling, ...(options.stableWindowMs === undefined ? {} : { stableWindowMs: options.stableWindowMs }) },
          t,
          history.get(name) ?? [],
        );
        history.set(name, decision.history);
        const current = eps.length + (busy ? 1 : 0);
        if (decision.direction === 'up' && decision.replicas > current && !busy) {
          const count = decision.replicas - current;
          log.info({ service: name, count, reason: decision.reason }, 'scaling up');
          track(
            scaleOut(name, eps, count).catch((e: unknown) => {
              log.warn({ service: name, err: (e as Error).message }, 'scaling up failed');
            }),
          );
        } else if (decision.direction === 'down' && decision.replicas < eps.length) {
          const extra = eps.length - decision.replicas;
          const victims = eps
            .filter((e) => options.ownedBy(e))
            .sort((a, b) => tracker.count(a.id) - tracker.count(b.id) || a.readyAt - b.readyAt)
            .slice(0, extra);
          if (victims.length === 0) continue;
          const scaling = entry.description.scaling;
          if (decision.replicas === 0 && (await busyElsewhere(victims, scaling.idleTimeoutMs, t))) continue;
          log.info({ service: name, count: victims.length, reason: decision.reason }, decision.replicas === 0 ? 'scaling to zero' : 'scaling down');
          for (const ep of victims) {
            const done = decision.replicas === 0 ? scaleToZero(name, ep, scaling) : deployer.undeploy(ep, 'scaled-down');
            track(done.catch((e: unknown) => log.warn({ service: name, instance: ep.id, err: (e as Error).message }, 'scaling down failed')));
          }
        }
      }
      for (const name of history.keys()) if (table.service(name) === undefined) history.delete(name);
    })()
      .catch((e: unknown) => log.error({ err: String(e) }, 'scaling pass failed'))
      .finally(() => {
        running = undefined;
      });
    return running;
  }

  return {
    tick,
    start() {
      if (timer || closed) return;
      timer = setInterval(() => void tick(), intervalMs);
      timer.unref();
    },
    async close() {
      closed = true;
      if (timer) clearInterval(timer);
      await running;
      await Promise.allSettled([...work]);
    },
  };
}
