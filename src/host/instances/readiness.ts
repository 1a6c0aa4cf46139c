// Readiness: waiting for a started instance to answer GET <path> on its socket.
import { request as httpRequest } from 'node:http';
import { stat } from 'node:fs/promises';
import type { InstanceExit } from '../drivers/driver.ts';
import { exitedEarly } from './exit-handling.ts';
import { ShoalError } from '../../protocol/index.ts';

export const DEFAULT_READY_TIMEOUT_MS = 10_000;

/**
 * Polls GET <path> on the instance's socket until it answers 200. Quick at first (the
 * socket usually appears within tens of ms), then backing off. Fails early if the
 * instance exits, with 'timeout' past the deadline.
 */
export async function waitReady(
  socketPath: string,
  path: string,
  timeoutMs: number,
  exited: Promise<InstanceExit>,
  aborted: () => boolean = () => false,
): Promise<void> {
  const start = performance.now();
  const deadline = start + timeoutMs;
  let gone: InstanceExit | undefined;
  // A rejected `exited` is the exit watcher's to report (exit-handling.ts); here it only ends the wait.
  void exited.then(
    (e) => {
      gone = e;
    },
    () => {},
  );
  let lastError = 'no answer';
  for (let attempt = 1; ; attempt++) {
    if (gone) throw exitedEarly(gone);
    if (aborted()) throw new ShoalError('unavailable', 'the host is shutting down');
    const left = deadline - performance.now();
    if (left <= 0) throw new ShoalError('timeout', `instance not ready within ${timeoutMs} ms (last: ${lastError})`, { field: 'readiness.timeoutMs' });
    const outcome = await tryOnce(socketPath, path, left);
    if (outcome === 'ready') return;
    lastError = outcome;
    await new Promise<void>((r) => setTimeout(r, backoffMs(attempt, performance.now() - start)));
  }
}

/** 'ready', or why not. */
async function tryOnce(socketPath: string, path: string, leftMs: number): Promise<'ready' | string> {
  // Probing a socket file that does not exist yet costs a failed stat; skip the request.
  const present = await stat(socketPath).then(
    () => true,
    () => false,
  );
  if (!present) return `socket ${socketPath} not there yet`;
  try {
    const status = await probe(socketPath, path, Math.min(leftMs, 2000));
    return status === 200 ? 'ready' : `status ${status}`;
  } catch (e) {
    return (e as Error).message;
  }
}

/** The pause after the attempt-th probe: short while the instance is likely just starting. */
export function backoffMs(attempt: number, elapsedMs: number): number {
  if (attempt === 1) return 2;
  return elapsedMs < 200 ? 5 : elapsedMs < 2000 ? 20 : 100;
}

export function probe(socketPath: string, path: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ socketPath, path, method: 'GET', timeout: timeoutMs, headers: { host: 'localhost', connection: 'close' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${Math.round(timeoutMs)} ms`)));
    req.on('error', reject);
    req.end();
  });
}
