// The scaling loop: every intervalMs, for each service, the pure autoscaler turns this
// provider's view of the load (in-flight and queued messages, ready instances, the time
// of the last message) into a replica count; the loop then asks the deployer for more
// instances or undeploys the least busy ones (drained first). Scale to zero is the
// autoscaler saying 0 after the idle timeout; the next message brings the service back
// through the activator.
//
// With several providers on one database each sees only its own traffic, so each scales
// down only the instances it deployed itself.
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

  function tick(): Promise<void> {
    if (running) return running;
    running = (async () => {
      const t = now();
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
        const busy = options.busy(name);
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
            deployer.deploy(name, { count, reason: 'scale' }).catch((e: unknown) => {
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
          log.info({ service: name, count: victims.length, reason: decision.reason }, decision.replicas === 0 ? 'scaling to zero' : 'scaling down');
          for (const ep of victims) track(deployer.undeploy(ep, 'scaled-down').catch((e: unknown) => log.warn({ service: name, instance: ep.id, err: (e as Error).message }, 'scaling down failed')));
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
