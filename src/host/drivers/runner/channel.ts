// Request/reply over a runner's IPC channel: each request carries a `seq`, the runner
// answers `{ t: 'reply', seq, ok, … }`; everything else it sends is an event.
import type { ChildProcess } from 'node:child_process';
import type { Server } from 'node:net';
import { ShoalError } from '../../../protocol/index.ts';

export interface RunnerReply {
  t: 'reply';
  seq: number;
  ok: boolean;
  message?: string;
  [key: string]: unknown;
}

export interface RunnerChannel {
  /** Sends `message` with a fresh seq (and a handle: a listening socket); resolves with the reply. */
  request(message: Record<string, unknown>, handle?: Server): Promise<RunnerReply>;
  /** Sends without waiting for a reply. */
  post(message: Record<string, unknown>): void;
  /** Fails every pending request (the runner is gone). */
  fail(reason: string): void;
}

export function createRunnerChannel(child: ChildProcess, onEvent: (message: { t: string; [key: string]: unknown }) => void): RunnerChannel {
  let seq = 0;
  const pending = new Map<number, { resolve: (r: RunnerReply) => void; reject: (e: Error) => void }>();
  let failedWith: string | undefined;
  child.on('message', (m: { t: string; seq?: number }) => {
    if (m.t === 'reply' && typeof m.seq === 'number') {
      const p = pending.get(m.seq);
      pending.delete(m.seq);
      p?.resolve(m as RunnerReply);
    } else onEvent(m);
  });
  const fail = (reason: string): void => {
    failedWith ??= reason;
    for (const p of pending.values()) p.reject(new ShoalError('unavailable', reason));
    pending.clear();
  };
  child.once('exit', () => fail('the runner exited'));
  return {
    request(message, handle) {
      if (failedWith !== undefined) return Promise.reject(new ShoalError('unavailable', failedWith));
      const s = ++seq;
      return new Promise<RunnerReply>((resolve, reject) => {
        pending.set(s, { resolve, reject });
        const sent = (e: Error | null): void => {
          if (e === null) return;
          pending.delete(s);
          reject(new ShoalError('unavailable', `sending to the runner failed: ${e.message}`, { cause: e }));
        };
        if (handle === undefined) child.send({ ...message, seq: s }, sent);
        else child.send({ ...message, seq: s }, handle, sent);
      });
    },
    post(message) {
      if (failedWith === undefined && child.connected) child.send(message);
    },
    fail,
  };
}
