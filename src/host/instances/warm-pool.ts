// The warm pool: entries created ahead (containers, for the agent) under a key, so the
// next deployment of the same plan takes one instead of preparing from scratch. Bounded
// per key and in all; when full, an entry of another key makes room. Entries hold no
// reservation and are not instances. The pool only counts and schedules: what an entry
// is, how it is made and how it is discarded are passed in.
import type { Logger } from '../ports.ts';

export interface WarmPoolOptions<T> {
  /** Entries kept per key (0 turns the pool off). */
  perKey: number;
  /** Entries kept in all, counting those being created. */
  max: number;
  /** Releases an entry nobody will take. Must not throw; failures are logged. */
  discard(entry: T): Promise<void>;
  log: Logger;
}

export interface WarmPool<T> {
  /** Removes and returns an entry made for `key`. */
  take(key: string): T | undefined;
  /** Whether an entry made for `key` is ready. */
  has(key: string): boolean;
  /**
   * Starts making one more entry for `key` unless it has enough. `create` resolves with
   * the entry, or with undefined when it gave up (having cleaned up after itself).
   */
  refill(key: string, create: () => Promise<T | undefined>): void;
  /** Discards the ready entries that match; returns how many. */
  drop(match: (entry: T) => boolean): number;
  /** The ready entries (a copy). */
  entries(): T[];
  /** Entries ready and being made. */
  size(): { ready: number; making: number };
  /** Stops refills, waits for those under way, and discards every entry. */
  close(): Promise<void>;
}

export function createWarmPool<T>(options: WarmPoolOptions<T>): WarmPool<T> {
  const ready: Array<{ key: string; entry: T }> = [];
  const making = new Map<string, number>();
  const jobs = new Set<Promise<void>>();
  let closed = false;

  const makingTotal = (): number => [...making.values()].reduce((a, b) => a + b, 0);
  const discard = (entry: T): Promise<void> =>
    options.discard(entry).catch((e: unknown) => options.log.error({ err: String(e) }, 'discarding a warm entry failed'));
  const done = (key: string): void => {
    const n = (making.get(key) ?? 1) - 1;
    if (n > 0) making.set(key, n);
    else making.delete(key);
  };
  /** Room for one more entry of `key`, making it by discarding another key's oldest. */
  const makeRoom = (key: string): boolean => {
    const have = ready.filter((e) => e.key === key).length + (making.get(key) ?? 0);
    if (have >= options.perKey) return false;
    if (ready.length + makingTotal() < options.max) return true;
    const oldest = ready.findIndex((e) => e.key !== key);
    if (oldest < 0) return false;
    void discard(ready.splice(oldest, 1)[0]!.entry);
    return true;
  };

  return {
    has: (key) => ready.some((e) => e.key === key),
    take(key) {
      const i = ready.findIndex((e) => e.key === key);
      return i < 0 ? undefined : ready.splice(i, 1)[0]!.entry;
    },
    refill(key, create) {
      if (closed || options.perKey <= 0 || options.max <= 0 || !makeRoom(key)) return;
      making.set(key, (making.get(key) ?? 0) + 1);
      const job = (async () => {
        try {
          const entry = await create();
          if (entry === undefined) return;
          if (closed) await discard(entry);
          else ready.push({ key, entry });
        } catch (e) {
          options.log.warn({ key, err: String(e) }, 'could not make a warm entry');
        } finally {
          done(key);
        }
      })();
      jobs.add(job);
      void job.finally(() => jobs.delete(job));
    },
    drop(match) {
      let n = 0;
      for (let i = ready.length - 1; i >= 0; i--) {
        if (!match(ready[i]!.entry)) continue;
        void discard(ready.splice(i, 1)[0]!.entry);
        n++;
      }
      return n;
    },
    entries: () => ready.map((e) => e.entry),
    size: () => ({ ready: ready.length, making: makingTotal() }),
    async close() {
      closed = true;
      await Promise.allSettled([...jobs]);
      await Promise.allSettled(ready.splice(0).map((e) => discard(e.entry)));
    },
  };
}
