// The cold-start state machine: what happens between a Demand and ready endpoints (or a
// failure the waiting messages hear about). Per service at most one run at a time:
//   attempt → ready: done (the routing table releases the queue)
//           → deferred (another provider holds the deployment slot): follow its deployment;
//             if that fails or vanishes, claim again (not counted as an attempt)
//           → no host can take it: fail now (after trying the failed hosts once more)
//           → failed on some hosts: fail the waiting messages, back off, try other hosts
// After maxAttempts failures the service cools down: demands fail fast until it ends.
// The steps (attempt, follow) and the clock are injected, so each transition is tested
// without hosts, registry or real time.
import type { DeploymentRecord } from './registry/index.ts';
import type { Logger } from './logger.ts';
import type { Demand } from './activator/index.ts';
import { abortableSleep } from './sleep.ts';
import type { Timing } from './timeline.ts';

/** What one attempt (claim, place, deploy) came to. */
export interface AttemptResult {
  /** Endpoints that became ready (and are routable now). */
  ready: number;
  /** Why instances could not be deployed. */
  errors: string[];
  /** Hosts that failed this attempt (the next one goes elsewhere). */
  failedHosts: string[];
  /** No host can take the service (placement's words). */
  noHost?: string;
  /** Another provider's deployment holds the slot: nothing was deployed here. */
  deferred?: DeploymentRecord;
}

export interface ColdStartClock {
  now(): number;
  /** Resolves after `ms`, or at once when `signal` aborts. */
  sleep(ms: number, signal: AbortSignal): Promise<void>;
}

export interface ColdStartOptions {
  /** One attempt. `mode` 'add' claims even when a ready deployment exists elsewhere. Throws on a provider error (registry). */
  attempt(service: string, mode: 'cold' | 'add', exclude: readonly string[], timing: Timing): Promise<AttemptResult>;
  /** Waits for another provider's deployment and routes to it: true when routed, false to claim again. */
  follow(record: DeploymentRecord, deadline: number, signal: AbortSignal): Promise<boolean>;
  /** Answers every message waiting for `service` with a failure (the activator's fail). */
  fail(service: string, reason: string): void;
  /** Messages waiting for `service`. */
  queued(service: string): number;
  /** The service still exists (it may be removed mid-run). */
  exists(service: string): boolean;
  /** It has ready endpoints. */
  hasEndpoints(service: string): boolean;
  log: Logger;
  clock?: ColdStartClock;
  /** Attempts per demand before cooling down. Default 3. */
  maxAttempts?: number;
  /** First backoff between attempts; doubles each time. Default 250 ms. */
  backoffMs?: number;
  /** After maxAttempts failures, demands fail fast for this long. Default 10 s. */
  cooldownMs?: number;
  /** Pause before claiming again after a followed deployment did not give an endpoint. Default 50 ms. */
  watchIntervalMs?: number;
  /** Longest a followed deployment is waited for. Default 90 s. */
  followMs?: number;
  onColdStart?(service: string): void;
}

export interface ColdStart {
  /** The activator's Demand listener. */
  onDemand(demand: Demand): void;
  /** A cold start of `service` is under way. */
  busy(service: string): boolean;
  /** Forget cooldowns (a host was added, a service changed). */
  reset(service?: string): void;
  close(): Promise<void>;
}

export const realClock: ColdStartClock = { now: () => Date.now(), sleep: abortableSleep };

export function createColdStart(options: ColdStartOptions): ColdStart {
  const { log, fail } = options;
  const clock = options.clock ?? realClock;
  const maxAttempts = options.maxAttempts ?? 3;
  const backoffMs = options.backoffMs ?? 250;
  const cooldownMs = options.cooldownMs ?? 10_000;
  const watchMs = options.watchIntervalMs ?? 50;
  const followMs = options.followMs ?? 90_000;
  const active = new Map<string, Promise<void>>();
  const cooldown = new Map<string, { until: number; reason: string }>();
  const controller = new AbortController();
  const signal = controller.signal;
  let closed = false;

  async function run(service: string, timing: Timing): Promise<void> {
    const exclude: string[] = [];
    let delay = backoffMs;
    let last = '';
    let skipReady = false;
    let follows = 0;
    for (let n = 0; n < maxAttempts && !closed; ) {
      if (!options.exists(service)) {
        fail(service, `service ${service} was removed`);
        return;
      }
      let outcome: AttemptResult;
      try {
        // After a ready deployment elsewhere turned out unusable (its host is gone from
        // here), claim regardless of ready ones ('add'): it would be found again otherwise.
        outcome = await options.attempt(service, skipReady ? 'add' : 'cold', exclude, timing);
      } catch (e) {
        last = (e as Error).message;
        log.error({ service, err: last }, 'deployment attempt failed');
        fail(service, last);
        n++;
        await clock.sleep(delay, signal);
        delay *= 2;
        continue;
      }
      if (outcome.deferred) {
        const wasReady = outcome.deferred.state === 'ready';
        if (await options.follow(outcome.deferred, clock.now() + followMs, signal)) return;
        if (wasReady) skipReady = true;
        if (++follows > maxAttempts * 4) {
          last = 'other providers keep holding the deployment slot without a usable result';
          fail(service, last);
          break;
        }
        await clock.sleep(watchMs, signal);
        continue; // the other provider's attempt failed or vanished: claim again (not counted)
      }
      if (outcome.ready > 0) {
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
        fail(service, last);
        break;
      }
      exclude.push(...outcome.failedHosts);
      last = outcome.errors.join('; ');
      n++;
      const more = n < maxAttempts;
      fail(service, more ? `${last} (retrying on another host in ${delay} ms)` : last);
      log.warn({ service, attempt: n, error: last }, 'deployment failed');
      if (!more) break;
      await clock.sleep(delay, signal);
      delay *= 2;
    }
    if (!closed && last !== '') cooldown.set(service, { until: clock.now() + cooldownMs, reason: last });
  }

  function onDemand(demand: Demand): void {
    const { service } = demand;
    if (closed || active.has(service)) return;
    const cool = cooldown.get(service);
    if (cool !== undefined) {
      const left = cool.until - clock.now();
      if (left > 0) {
        fail(service, `${cool.reason} (deployment paused for ${Math.ceil(left / 1000)} s after ${maxAttempts} failed attempts)`);
        return;
      }
      cooldown.delete(service);
    }
    options.onColdStart?.(service);
    const timing: Timing = { t0: performance.now(), epoch: clock.now() };
    const p = run(service, timing)
      .catch((e: unknown) => {
        log.error({ service, err: String(e) }, 'cold deployment failed');
        fail(service, (e as Error).message);
      })
      .finally(() => {
        if (active.get(service) === p) active.delete(service);
        // Messages that arrived after a failure and found the slot busy still need a demand.
        if (!closed && options.queued(service) > 0 && !options.hasEndpoints(service)) {
          fail(service, cooldown.get(service)?.reason ?? 'deployment did not complete');
        }
      });
    active.set(service, p);
  }

  return {
    onDemand,
    busy: (service) => active.has(service),
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
