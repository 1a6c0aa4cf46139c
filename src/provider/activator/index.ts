// The activator: Knative's activator in small. While a service has no ready endpoint,
// the messages for it wait here in a bounded FIFO queue, and the activator asks for
// exactly one deployment (a Demand) however many messages arrive at once. It queues and
// releases, nothing else: it stores no endpoints and chooses none (the routing table
// holds them, the router chooses). It knows nothing of hosts, placement, the registry or
// drivers: "the service has ready endpoints now" arrives as data (`release`), a failed
// deployment arrives as data (`fail`), and demand leaves through listeners. No I/O;
// timers can be injected.
import { ShoalError } from '../../protocol/index.ts';

/**
 * A request for a deployment. `cold`: the service has no ready endpoint and nothing is
 * being deployed. `scale`: a deployment is already outstanding but the queue has grown
 * past its share (only when maxConcurrentDeploysPerService > 1).
 */
export interface Demand {
  service: string;
  /** Messages waiting for this service when the demand was made. */
  queued: number;
  reason: 'cold' | 'scale';
}

/** Why a wait failed. The HTTP edge answers all of them with 503 (+ Retry-After). */
export type ActivatorFailure = 'queue-full' | 'timeout' | 'deploy-failed' | 'aborted';

export class ActivatorError extends ShoalError {
  readonly reason: ActivatorFailure;
  readonly service: string;
  /** Suggested Retry-After, in whole seconds. */
  readonly retryAfterSeconds: number;
  /** The wiring layer's words when reason is 'deploy-failed'. */
  readonly deployError: string | undefined;

  constructor(reason: ActivatorFailure, service: string, message: string, retryAfterSeconds: number, deployError?: string) {
    super('unavailable', message, { detail: { reason, service, ...(deployError === undefined ? {} : { deployError }) } });
    this.name = 'ActivatorError';
    this.reason = reason;
    this.service = service;
    this.retryAfterSeconds = retryAfterSeconds;
    this.deployError = deployError;
  }
}

export function isActivatorError(e: unknown): e is ActivatorError {
  return e instanceof ActivatorError;
}

/** setTimeout/clearTimeout, injectable so tests drive time. */
export interface ActivatorTimers {
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

export interface ActivatorOptions {
  /** Most messages that may wait per service; one more is refused at once with 'queue-full'. */
  queueDepth: number;
  /** How long one message may wait for an endpoint before 'timeout'. */
  timeoutMs: number;
  /** Deployments the activator may ask for at once per service. Default 1. */
  maxConcurrentDeploysPerService?: number;
  /** Called for every Demand (same as calling `onDemand` once). */
  onDemand?: (demand: Demand) => void;
  /** Retry-After hint put on errors. Default 1 s. */
  retryAfterSeconds?: number;
  timers?: ActivatorTimers;
}

export interface ServiceQueueStats {
  service: string;
  /** Messages waiting now. */
  queued: number;
  /** Demands made and not yet answered by `release` or `fail`. */
  deploying: number;
}

export interface ActivatorStats {
  services: ServiceQueueStats[];
  /** Counters since creation, for metrics. */
  totals: { released: number; demands: number } & Record<ActivatorFailure, number>;
}

export interface Activator {
  /**
   * Queues a message for `service` (which has no ready endpoint) and resolves when
   * `release` says it has one (waiters are released in arrival order); the caller then
   * chooses the endpoint. Rejects with an ActivatorError: 'queue-full' at once, 'timeout'
   * after timeoutMs, 'deploy-failed' on `fail`, 'aborted' when `signal` aborts or the
   * activator closes.
   */
  wait(service: string, signal?: AbortSignal): Promise<void>;
  /** `service` has ready endpoints now: every waiting message is released, in order. */
  release(service: string): void;
  /**
   * The outstanding deployment(s) of `service` failed: every waiting message gets
   * 'deploy-failed' with `reason` at once, and the next message makes a new Demand.
   */
  fail(service: string, reason: string): void;
  /** Listen for Demands; returns the unsubscribe function. Listeners must not throw. */
  onDemand(listener: (demand: Demand) => void): () => void;
  /** Messages waiting for `service` now. */
  queued(service: string): number;
  stats(): ActivatorStats;
  /** Reject every waiting message with 'aborted' and refuse new waits (shutdown). */
  close(): void;
}

interface Waiter {
  resolve(): void;
  reject(err: ActivatorError): void;
  timer: unknown;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

interface ServiceState {
  /** A Set iterates in insertion order and deletes in O(1): a FIFO with cheap removal. */
  waiters: Set<Waiter>;
  deploying: number;
}

const defaultTimers: ActivatorTimers = {
  set: (fn, ms) => setTimeout(fn, ms),
  clear: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

function positiveInteger(value: number, field: string): number {
  if (!Number.isInteger(value) || value < 1) {
    throw new ShoalError('invalid', `activator: ${field} must be an integer ≥ 1, got ${value}`, { field });
  }
  return value;
}

export function createActivator(options: ActivatorOptions): Activator {
  const queueDepth = positiveInteger(options.queueDepth, 'queueDepth');
  const timeoutMs = positiveInteger(options.timeoutMs, 'timeoutMs');
  const maxDeploys = positiveInteger(options.maxConcurrentDeploysPerService ?? 1, 'maxConcurrentDeploysPerService');
  // With several deployments allowed, each one is "worth" this many waiting messages.
  const share = Math.ceil(queueDepth / maxDeploys);
  const retryAfter = options.retryAfterSeconds ?? 1;
  const timers = options.timers ?? defaultTimers;
  const listeners = new Set<(d: Demand) => void>();
  if (options.onDemand !== undefined) listeners.add(options.onDemand);
  const services = new Map<string, ServiceState>();
  const totals: ActivatorStats['totals'] = { released: 0, demands: 0, 'queue-full': 0, timeout: 0, 'deploy-failed': 0, aborted: 0 };
  let closed = false;

  const state = (service: string): ServiceState => {
    let s = services.get(service);
    if (s === undefined) {
      s = { waiters: new Set(), deploying: 0 };
      services.set(service, s);
    }
    return s;
  };

  // Keep the map from growing with every service ever seen.
  const tidy = (service: string, s: ServiceState) => {
    if (s.waiters.size === 0 && s.deploying === 0) services.delete(service);
  };

  const emit = (demand: Demand) => {
    totals.demands++;
    for (const l of [...listeners]) {
      try {
        l(demand);
      } catch (err) {
        // A throwing listener is a bug in the wiring layer; surface it without
        // corrupting the queue (the caller of wait() still gets its promise).
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  };

  const settle = (s: ServiceState, w: Waiter) => {
    s.waiters.delete(w);
    timers.clear(w.timer);
    if (w.signal !== undefined && w.onAbort !== undefined) w.signal.removeEventListener('abort', w.onAbort);
  };

  const failure = (reason: ActivatorFailure, service: string, message: string, deployError?: string) => {
    totals[reason]++;
    return new ActivatorError(reason, service, message, retryAfter, deployError);
  };

  return {
    wait(service, signal) {
      if (closed) return Promise.reject(failure('aborted', service, `service '${service}': the provider is shutting down`));
      if (signal?.aborted) return Promise.reject(failure('aborted', service, `service '${service}': the caller went away`));
      const s = state(service);
      if (s.waiters.size >= queueDepth) {
        return Promise.reject(
          failure('queue-full', service, `service '${service}': ${s.waiters.size} messages already wait for an instance; retry later`),
        );
      }
      return new Promise<void>((resolve, reject) => {
        const w: Waiter = { resolve, reject, timer: undefined, signal, onAbort: undefined };
        w.timer = timers.set(() => {
          settle(s, w);
          tidy(service, s);
          reject(failure('timeout', service, `service '${service}': no instance became ready within ${timeoutMs} ms`));
        }, timeoutMs);
        if (signal !== undefined) {
          w.onAbort = () => {
            settle(s, w);
            tidy(service, s);
            reject(failure('aborted', service, `service '${service}': the caller went away`));
          };
          signal.addEventListener('abort', w.onAbort, { once: true });
        }
        s.waiters.add(w);
        // Queue first, then demand: a listener that answers synchronously finds the waiter.
        const queued = s.waiters.size;
        if (s.deploying === 0) {
          s.deploying = 1;
          emit({ service, queued, reason: 'cold' });
        } else if (s.deploying < maxDeploys && queued > s.deploying * share) {
          s.deploying++;
          emit({ service, queued, reason: 'scale' });
        }
      });
    },

    release(service) {
      const s = services.get(service);
      if (s === undefined) return;
      s.deploying = 0;
      // Snapshot first: settling removes from the set. Promises resolve in this order.
      for (const w of [...s.waiters]) {
        settle(s, w);
        totals.released++;
        w.resolve();
      }
      tidy(service, s);
    },

    fail(service, reason) {
      const s = services.get(service);
      if (s === undefined) return;
      s.deploying = 0;
      for (const w of [...s.waiters]) {
        settle(s, w);
        w.reject(failure('deploy-failed', service, `service '${service}': deployment failed: ${reason}`, reason));
      }
      tidy(service, s);
    },

    onDemand(listener) {
      // Wrap so subscribing the same function twice gives two independent subscriptions.
      const l = (d: Demand) => listener(d);
      listeners.add(l);
      return () => {
        listeners.delete(l);
      };
    },

    queued: (service) => services.get(service)?.waiters.size ?? 0,

    stats: () => ({
      services: [...services].map(([service, s]) => ({
        service,
        queued: s.waiters.size,
        deploying: s.deploying,
      })),
      totals: { ...totals },
    }),

    close() {
      closed = true;
      for (const [service, s] of services) {
        for (const w of [...s.waiters]) {
          settle(s, w);
          w.reject(failure('aborted', service, `service '${service}': the provider is shutting down`));
        }
        s.deploying = 0;
        tidy(service, s);
      }
    },
  };
}
