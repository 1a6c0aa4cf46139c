// The intermediaries' routing logic (Baltic's eOr, ePar, eRef), without HTTP: a target is
// anything that can send one message and return one reply. The provider's data plane
// composes them per farm (farms.ts) with HTTP leaves; tests compose them with fakes.
import { ShoalError } from '../../protocol/index.ts';

export interface Reply {
  status: number;
  body: string;
  contentType?: string;
}

export interface Target {
  readonly id: string;
  /** Sends one message; `signal` aborts it (par cancels the losers this way). */
  send(operation: string, body: string, signal?: AbortSignal): Promise<Reply>;
}

const ok = (r: Reply) => r.status >= 200 && r.status < 300;

export interface OrTarget extends Target {
  /** Messages in flight per target (least outstanding reads it). */
  outstanding(): number[];
}

export interface OrOptions {
  /**
   * May a message that failed this way be sent to another target? (The provider passes:
   * the operation is idempotent and the failure is the target's — a 502/503/504 or no reply.)
   * Default: never.
   */
  retryable?(operation: string, failure: { reply: Reply } | { error: unknown }): boolean;
}

/**
 * Load balancing: each message goes to the target with the fewest messages in flight,
 * ties broken round robin (so an idle farm still spreads its load). A failure the caller
 * deems retryable is sent on to the next target not yet tried (at most once each).
 */
export function createOr(id: string, targets: readonly Target[], options: OrOptions = {}): OrTarget {
  if (targets.length === 0) throw new ShoalError('invalid', `or ${id}: no targets`, { field: 'targets' });
  const inFlight = targets.map(() => 0);
  let next = 0;
  const pick = (tried: ReadonlySet<number>): number => {
    let best = -1;
    for (let k = 0; k < targets.length; k++) {
      const i = (next + k) % targets.length;
      if (tried.has(i)) continue;
      if (best === -1 || inFlight[i]! < inFlight[best]!) best = i;
    }
    return best;
  };
  return {
    id,
    outstanding: () => [...inFlight],
    async send(operation, body, signal) {
      const tried = new Set<number>();
      for (;;) {
        const i = pick(tried);
        tried.add(i);
        next = (i + 1) % targets.length;
        inFlight[i]!++;
        let failure: { reply: Reply } | { error: unknown };
        try {
          const reply = await targets[i]!.send(operation, body, signal);
          if (ok(reply)) return reply;
          failure = { reply };
        } catch (error) {
          failure = { error };
        } finally {
          inFlight[i]!--;
        }
        const again = tried.size < targets.length && !signal?.aborted && (options.retryable?.(operation, failure) ?? false);
        if (!again) {
          if ('reply' in failure) return failure.reply;
          throw failure.error;
        }
      }
    },
  };
}

/**
 * Fault tolerance: each message goes to every target at once; the first 2xx reply wins and
 * the others are cancelled (their AbortSignals fire). If none succeeds, the last failure
 * (a non-2xx reply, or the error thrown) is what the caller gets.
 */
export function createPar(id: string, targets: readonly Target[]): Target {
  if (targets.length === 0) throw new ShoalError('invalid', `par ${id}: no targets`, { field: 'targets' });
  return {
    id,
    send(operation, body, signal) {
      return new Promise<Reply>((resolve, reject) => {
        const controllers = targets.map(() => new AbortController());
        const onAbort = () => controllers.forEach((c) => c.abort(signal?.reason));
        signal?.addEventListener('abort', onAbort, { once: true });
        let pending = targets.length;
        let settled = false;
        let last: { reply: Reply } | { error: unknown } | undefined;
        const finish = () => signal?.removeEventListener('abort', onAbort);
        targets.forEach((t, i) => {
          t.send(operation, body, controllers[i]!.signal).then(
            (reply) => {
              if (settled) return;
              if (ok(reply)) {
                settled = true;
                finish();
                controllers.forEach((c, j) => j !== i && c.abort(new ShoalError('unavailable', `par ${id}: another target answered first`)));
                return resolve(reply);
              }
              last = { reply };
              done();
            },
            (error: unknown) => {
              if (settled) return;
              last = { error };
              done();
            },
          );
        });
        function done() {
          if (--pending > 0) return;
          settled = true;
          finish();
          if (last !== undefined && 'reply' in last) resolve(last.reply);
          else reject(last?.error ?? new ShoalError('unavailable', `par ${id}: every target failed`));
        }
      });
    },
  };
}

export interface RefTarget extends Target {
  /** The target messages go to now. */
  current(): Target;
  /**
   * Rebinds atomically: from the moment it returns no message is sent to the old target;
   * messages already sent there finish there. The promise it returns resolves when they have.
   */
  update(target: Target): { drained: Promise<void> };
}

/** Dynamic update: an indirection whose target can be swapped while messages flow. */
export function createRef(id: string, initial: Target): RefTarget {
  let current = initial;
  const inFlight = new Map<Target, { count: number; waiters: Array<() => void> }>();
  const entry = (t: Target) => {
    let e = inFlight.get(t);
    if (e === undefined) inFlight.set(t, (e = { count: 0, waiters: [] }));
    return e;
  };
  return {
    id,
    current: () => current,
    async send(operation, body, signal) {
      // The target is read once, synchronously, at send time: that is what makes update atomic.
      const t = current;
      const e = entry(t);
      e.count++;
      try {
        return await t.send(operation, body, signal);
      } finally {
        if (--e.count === 0) {
          inFlight.delete(t);
          for (const w of e.waiters.splice(0)) w();
        }
      }
    },
    update(target) {
      const old = current;
      current = target;
      const e = inFlight.get(old);
      if (old === target || e === undefined || e.count === 0) return { drained: Promise.resolve() };
      return { drained: new Promise<void>((resolve) => e.waiters.push(resolve)) };
    },
  };
}
