// Liveness: a ready instance is checked with its readiness probe on a period, and at once
// when the forwarder finds it not answering (suspect). One that fails `failures` probes in
// a row is unresponsive: it leaves routing, its event tells the provider (which records a
// failure, applies crash rules and replaces it), and it is stopped and torn down like a
// crashed one (its record and log stay until pruned).
import type { EventBus } from '../events.ts';
import { emitFor, type InstanceStore, type LiveInstance } from './instance-store.ts';
import type { Logger } from '../ports.ts';
import type { RunningInstance } from '../drivers/driver.ts';
import { readFile } from 'node:fs/promises';

export interface LivenessLimits {
  /** How often each ready instance is probed. Default 5 s. */
  periodMs?: number;
  /** Longest one probe may take. Default 2 s. */
  timeoutMs?: number;
  /** Failed probes in a row that make the verdict. Default 2. */
  failures?: number;
  /** Pause between the probes of one check. Default 250 ms. */
  retryMs?: number;
}

export interface LivenessTarget {
  id: string;
  socketPath: string;
  path: string;
}

export interface LivenessOptions extends LivenessLimits {
  /** The instances to check now (ready ones). */
  targets(): LivenessTarget[];
  /** GET path on the socket; resolves with the status, rejects when nothing answers. */
  probe(socketPath: string, path: string, timeoutMs: number): Promise<number>;
  onUnresponsive(id: string, why: string): void;
  log: Logger;
}

export interface Liveness {
  /** Checks the instance now (the forwarder could not reach it); at most one check at a time, and not more often than every retryMs. */
  suspect(id: string): void;
  /** One pass over every ready instance (what the timer does). */
  tick(): Promise<void>;
  start(): void;
  close(): Promise<void>;
}

export function createLiveness(options: LivenessOptions): Liveness {
  const periodMs = options.periodMs ?? 5000;
  const timeoutMs = options.timeoutMs ?? 2000;
  const failures = Math.max(1, options.failures ?? 2);
  const retryMs = options.retryMs ?? 250;
  const checking = new Map<string, Promise<void>>();
  const lastSuspect = new Map<string, number>();
  let timer: ReturnType<typeof setInterval> | undefined;
  let closed = false;

  /** Up to `failures` probes, stopping at the first answer of 200. */
  async function check(t: LivenessTarget): Promise<void> {
    let why = '';
    for (let n = 0; n < failures; n++) {
      if (closed) return;
      if (n > 0) await new Promise((r) => setTimeout(r, retryMs));
      try {
        const status = await options.probe(t.socketPath, t.path, timeoutMs);
        if (status === 200) return;
        why = `GET ${t.path} answered ${status}`;
      } catch (e) {
        why = `GET ${t.path}: ${(e as Error).message}`;
      }
    }
    if (closed) return;
    // Still a target? (paused, removed or crashed meanwhile: not ours to judge)
    if (!options.targets().some((x) => x.id === t.id)) return;
    options.onUnresponsive(t.id, `${failures} probes failed (last: ${why})`);
  }

  function run(t: LivenessTarget): Promise<void> {
    let p = checking.get(t.id);
    if (p !== undefined) return p;
    p = check(t)
      .catch((e: unknown) => options.log.error({ instance: t.id, err: String(e) }, 'liveness check failed'))
      .finally(() => checking.delete(t.id));
    checking.set(t.id, p);
    return p;
  }

  async function tick(): Promise<void> {
    const targets = options.targets();
    const ids = new Set(targets.map((t) => t.id));
    for (const id of lastSuspect.keys()) if (!ids.has(id)) lastSuspect.delete(id);
    await Promise.all(targets.map(run));
  }

  return {
    suspect(id) {
      if (closed || checking.has(id)) return;
      const now = Date.now();
      if (now - (lastSuspect.get(id) ?? 0) < retryMs) return;
      const t = options.targets().find((x) => x.id === id);
      if (t === undefined) return;
      if (lastSuspect.size > 4096) lastSuspect.clear(); // without a periodic tick nothing else forgets them
      lastSuspect.set(id, now);
      void run(t);
    },
    tick,
    start() {
      if (timer || closed || periodMs <= 0) return;
      timer = setInterval(() => void tick(), periodMs);
      timer.unref();
    },
    async close() {
      closed = true;
      if (timer) clearInterval(timer);
      await Promise.allSettled([...checking.values()]);
    },
  };
}

/** Ready instances and how to probe each (the readiness path of its plan). */
export function livenessTargets(store: Pick<InstanceStore, 'all' | 'resolve'>): LivenessTarget[] {
  const out: LivenessTarget[] = [];
  for (const l of store.all()) {
    if (l.record.state !== 'ready' || l.stopping || l.exit || !l.running) continue;
    const r = store.resolve(l.record.id);
    if (r === undefined) continue;
    out.push({ id: l.record.id, socketPath: r.socketPath, path: l.record.plan.readiness?.path ?? '/healthz' });
  }
  return out;
}

export interface UnresponsiveDeps {
  events: Pick<EventBus, 'emit'>;
  teardown(l: LiveInstance): Promise<void>;
  save(l: LiveInstance): Promise<void>;
  /** Called once it is torn down and saved. */
  afterCleanup(): void;
  onUnroutable?: (id: string) => void;
  log: Logger;
}

/** Out of routing first (the event), then stopped and torn down; its record keeps the verdict. */
export async function stopUnresponsive(deps: UnresponsiveDeps, l: LiveInstance, why: string): Promise<void> {
  if (l.record.state !== 'ready' || l.stopping) return;
  const instance = l.record.id;
  l.record.state = 'unresponsive';
  l.stopping = true; // its exit is ours now: the exit handler only reports it
  deps.onUnroutable?.(instance);
  emitFor(deps.events, l, 'unresponsive', { message: why });
  deps.log.warn({ instance, why }, 'instance unresponsive: stopping it');
  try {
    await deps.teardown(l);
  } catch (e) {
    deps.log.error({ instance, err: String(e) }, 'cleanup of an unresponsive instance was incomplete');
  }
  try {
    await deps.save(l);
  } catch (e) {
    deps.log.error({ instance, err: String(e) }, 'saving the unresponsive verdict failed');
  }
  deps.afterCleanup();
}

/**
 * Whether a probe failure is the instance's death (a crash, the exit handler's to report)
 * rather than a live process that stopped answering. A process still running (not a
 * zombie) answers at once; otherwise its exit report gets EXIT_REPORT_MS to arrive.
 */
export async function diedWithin(running: RunningInstance, ms: number): Promise<boolean> {
  if (running.pid !== undefined && (await processRunning(running.pid))) return false;
  return exitedWithin(running, ms);
}

/** A host pid that exists and is not a zombie (/proc/<pid>/stat: the state after the name). */
async function processRunning(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X' && state !== '';
  } catch {
    return false; // gone
  }
}

/** How long a driver may take to report an instance's exit (RunningInstance.exited). */
export const EXIT_REPORT_MS = 1500;

/** True if the instance's exit is reported within ms. */
export function exitedWithin(running: RunningInstance, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    timer.unref();
    running.exited.then(
      () => {
        clearTimeout(timer);
        resolve(true);
      },
      () => {
        clearTimeout(timer);
        resolve(true);
      },
    );
  });
}
