// The host's event stream: instance started, ready, exited, crashed, oom, paused,
// resumed, removed. Subscribers (the SSE endpoint, metrics, tests) get every event in
// order; a short history lets a reconnecting SSE client resume from Last-Event-ID.
import type { HostEvent } from '../protocol/index.ts';

export type HostEventInput = Omit<HostEvent, 'seq' | 'at'> & { at?: number };

export interface EventBus {
  emit(event: HostEventInput): HostEvent;
  /** Returns the unsubscribe function. */
  subscribe(listener: (event: HostEvent) => void): () => void;
  /** Events with seq > after that are still in the history, oldest first. */
  since(after: number): HostEvent[];
  /** Resolves with the first event (from now on) that matches. */
  next(match: (event: HostEvent) => boolean, timeoutMs?: number): Promise<HostEvent>;
}

export function createEventBus(options: { historySize?: number; onListenerError?: (e: unknown) => void } = {}): EventBus {
  const historySize = options.historySize ?? 1000;
  // A failing listener must not stop the others nor the emitter; it is told, never dropped.
  const onListenerError = options.onListenerError ?? ((e: unknown) => process.emitWarning(`a host event listener failed: ${String(e)}`));
  const history: HostEvent[] = [];
  const listeners = new Set<(event: HostEvent) => void>();
  let seq = 0;

  const bus: EventBus = {
    emit(input) {
      const event: HostEvent = { ...input, seq: ++seq, at: input.at ?? Date.now() };
      for (const k of Object.keys(event) as Array<keyof HostEvent>) if (event[k] === undefined) delete event[k];
      history.push(event);
      if (history.length > historySize) history.splice(0, history.length - historySize);
      for (const l of [...listeners]) {
        try {
          l(event);
        } catch (e) {
          onListenerError(e);
        }
      }
      return event;
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    since(after) {
      return history.filter((e) => e.seq > after);
    },
    next(match, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          off();
          reject(new Error(`no matching host event within ${timeoutMs} ms`));
        }, timeoutMs);
        const off = bus.subscribe((e) => {
          if (!match(e)) return;
          clearTimeout(timer);
          off();
          resolve(e);
        });
      });
    },
  };
  return bus;
}
