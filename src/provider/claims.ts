// Claims and leases: a service's one in-flight deployment slot in the registry. The claim
// is what makes "one deployment per cold service" hold across several providers sharing
// a database. The winner holds the slot by renewing its lease while it deploys (a
// provider that dies mid-deploy loses it after leaseMs); a loser watches the winner's
// deployment until it is ready, failed or gone.
import type { ClaimResult, DeploymentRecord, Registry } from './registry/index.ts';
import type { Logger } from './logger.ts';
import { abortableSleep } from './sleep.ts';
import { conditionalWrite, logWriteFailure } from './write-failures.ts';

export interface ClaimsOptions {
  registry: Pick<Registry, 'claimDeployment' | 'renewClaim' | 'updateDeployment' | 'getDeployment'>;
  providerId: string;
  log: Logger;
  /** How long a claim holds without renewal. Default 30 s. */
  leaseMs?: number;
  /** How often a followed deployment is read. Default 50 ms. */
  watchIntervalMs?: number;
  now?: () => number;
  /** Resolves after `ms`, or at once when `signal` aborts. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Renewal timers (tests drive them). */
  timers?: { every(fn: () => void, ms: number): unknown; clear(handle: unknown): void };
}

export interface Lease {
  /** Stops renewing (the deployment left pending/deploying, or failed). */
  stop(): void;
}

export interface Claims {
  readonly leaseMs: number;
  /** Claims the slot for `service` ('cold': only if nothing is ready or in flight; 'add': unless one is in flight). */
  claim(request: { service: string; version: string; mode: 'cold' | 'add'; hostId?: string }): Promise<ClaimResult>;
  /** Keeps renewing a won claim until stopped; a failed renewal is logged (the lease may lapse). */
  hold(deploymentId: string): Lease;
  /** Gives the slot back after a provider error, so the next attempt can claim it. Never throws. */
  giveBack(deploymentId: string, error: string): Promise<void>;
  /**
   * Watches another provider's deployment until it is ready (resolves with the ready
   * record), or failed, stopped, gone, past `deadline` or aborted (resolves undefined).
   */
  watch(record: DeploymentRecord, deadline: number, signal: AbortSignal): Promise<DeploymentRecord | undefined>;
}

const defaultTimers = {
  every: (fn: () => void, ms: number) => {
    const t = setInterval(fn, ms);
    t.unref();
    return t;
  },
  clear: (h: unknown) => clearInterval(h as ReturnType<typeof setInterval>),
};

export function createClaims(options: ClaimsOptions): Claims {
  const { registry, providerId, log } = options;
  const leaseMs = options.leaseMs ?? 30_000;
  const watchMs = options.watchIntervalMs ?? 50;
  const now = options.now ?? Date.now;
  const sleep = options.sleep ?? abortableSleep;
  const timers = options.timers ?? defaultTimers;

  return {
    leaseMs,
    async claim(request) {
      const result = await registry.claimDeployment({ ...request, providerId, now: now(), leaseMs });
      if (result.claimed && result.tookOver) log.warn({ service: request.service, deployment: result.tookOver.id }, 'took over an expired deployment claim');
      return result;
    },

    hold(deploymentId) {
      const handle = timers.every(() => {
        registry.renewClaim(deploymentId, providerId, now(), leaseMs).then(
          (held) => {
            if (!held) log.warn({ deployment: deploymentId }, 'a deployment claim could not be renewed: it is no longer ours or no longer in flight');
          },
          logWriteFailure(log, 'renewing a deployment claim (the lease may lapse)', { deployment: deploymentId }),
        );
      }, Math.max(1000, leaseMs / 3));
      return { stop: () => timers.clear(handle) };
    },

    async giveBack(deploymentId, error) {
      await conditionalWrite(
        registry.updateDeployment(deploymentId, { state: 'failed', error: `provider error: ${error}`, leaseUntil: null, ifState: ['pending', 'deploying'] }),
        log,
        'giving back a deployment claim (others wait for its lease to lapse)',
        { deployment: deploymentId },
      );
    },

    async watch(existing, deadline, signal) {
      let record: DeploymentRecord | undefined = existing;
      while (!signal.aborted) {
        if (record === undefined || record.state === 'failed' || record.state === 'stopped') return undefined;
        if (record.state === 'ready') return record;
        if (now() > deadline) return undefined;
        await sleep(watchMs, signal);
        record = await registry.getDeployment(record.id);
      }
      return undefined;
    },
  };
}
