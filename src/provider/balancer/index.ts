// Load balancing across a service's ready endpoints (Knative's lb_policy.go in small).
// Policies are plain functions of the targets; the in-flight tracker is what makes
// "least outstanding requests" accurate: the router acquires before it forwards and
// releases when the reply has been sent (or the forward failed). No I/O, no clocks.

/** Anything routable: the router's endpoint with its current outstanding requests. */
export interface Target {
  readonly id: string;
  /** Requests forwarded to this target and not yet answered. */
  readonly inFlight: number;
}

/** Picks one target, or undefined when there is none. `rand` returns [0, 1). */
export type LbPolicy = <T extends Target>(targets: readonly T[], rand?: () => number) => T | undefined;

/**
 * The target with the fewest outstanding requests. Ties: a random one of the tied
 * targets when `rand` is given (so several routers do not herd onto the same one),
 * else the first in the list.
 */
export const leastOutstanding: LbPolicy = (targets, rand) => {
  let best: (typeof targets)[number] | undefined;
  let tied = 0;
  for (const t of targets) {
    if (best === undefined || t.inFlight < best.inFlight) {
      best = t;
      tied = 1;
    } else if (t.inFlight === best.inFlight) {
      tied++;
      // Reservoir sampling: each of the tied targets ends up chosen with probability 1/tied.
      if (rand !== undefined && rand() * tied < 1) best = t;
    }
  }
  return best;
};

/**
 * Round robin needs a position, so it is a factory: each call of the returned policy
 * takes the next target. The position survives changes of the target list (it is
 * taken modulo the list's length).
 */
export function createRoundRobin(): LbPolicy {
  let next = 0;
  return (targets) => {
    if (targets.length === 0) return undefined;
    const t = targets[next % targets.length];
    next = (next + 1) % Number.MAX_SAFE_INTEGER;
    return t;
  };
}

/** Counts outstanding requests per target id. */
export interface InFlightTracker {
  /** Count one request against `id`; call the returned function once when it ends (extra calls do nothing). */
  acquire(id: string): () => void;
  /** Outstanding requests on `id` (0 when unknown). */
  count(id: string): number;
  /** Outstanding requests across all targets. */
  total(): number;
  /** Drop `id` (its endpoint left the routing set); releases of its earlier acquires then do nothing. */
  forget(id: string): void;
  /** The targets with their current counts, ready for a policy. */
  view<T extends { readonly id: string }>(targets: readonly T[]): Array<T & { inFlight: number }>;
}

export function createInFlightTracker(): InFlightTracker {
  // One cell per target id; a release holds its cell, so a release after forget()
  // (or after a new cell replaced the old one) cannot touch the new count.
  const cells = new Map<string, { n: number }>();
  let total = 0;
  return {
    acquire(id) {
      let cell = cells.get(id);
      if (cell === undefined) {
        cell = { n: 0 };
        cells.set(id, cell);
      }
      cell.n++;
      total++;
      const held = cell;
      let done = false;
      return () => {
        if (done) return;
        done = true;
        if (cells.get(id) !== held) return;
        held.n--;
        total--;
      };
    },
    count: (id) => cells.get(id)?.n ?? 0,
    total: () => total,
    forget(id) {
      const cell = cells.get(id);
      if (cell === undefined) return;
      total -= cell.n;
      cells.delete(id);
    },
    view: (targets) => targets.map((t) => ({ ...t, inFlight: cells.get(t.id)?.n ?? 0 })),
  };
}
