// What shoal-shim (native/shim) tells the agent: its report lines on fd 3 ("created
// <pid>", "failed <n>", "exit <code> <signal>"), and the exit file and pid file it leaves
// for an agent that restarted meanwhile. Shared by the drivers it monitors (runc, vm).
import { readFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { signalName } from './proc.ts';

export interface ShimExit {
  code: number | undefined;
  signal: string | undefined;
}

/** Parses the shim's "exit <code> <signal>" line. */
export function parseExitLine(line: string): ShimExit | undefined {
  const m = /^exit (-?\d+) (\d+)/.exec(line.trim());
  if (!m) return undefined;
  const code = Number(m[1]);
  const sig = Number(m[2]);
  return { code: code < 0 ? undefined : code, signal: sig > 0 ? signalName(sig) ?? `SIG${sig}` : undefined };
}

export async function readPidFile(file: string): Promise<number | undefined> {
  try {
    const n = Number.parseInt(await readFile(file, 'utf8'), 10);
    return n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

export async function readExitFile(file: string): Promise<ShimExit | undefined> {
  try {
    return parseExitLine(await readFile(file, 'utf8'));
  } catch {
    return undefined;
  }
}

/** Reads '\n'-terminated lines: next() for the first ones, onLine() for the rest. */
export function lineReader(stream: Readable) {
  let buffer = '';
  const queue: string[] = [];
  let ended = false;
  let waiter: (() => void) | undefined;
  let listener: ((line: string) => void) | undefined;
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    buffer += chunk;
    let nl: number;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      if (listener) listener(line);
      else queue.push(line);
    }
    waiter?.();
  });
  const end = (): void => {
    ended = true;
    waiter?.();
  };
  stream.on('end', end);
  stream.on('close', end);
  stream.on('error', end);
  return {
    async next(): Promise<string | undefined> {
      while (queue.length === 0 && !ended) await new Promise<void>((r) => (waiter = r));
      waiter = undefined;
      return queue.shift();
    },
    onLine(fn: (line: string) => void): void {
      listener = fn;
      for (const line of queue.splice(0)) fn(line);
    },
    close(): void {
      listener = undefined;
      stream.removeAllListeners('data');
      stream.destroy();
    },
  };
}
