// A small QMP client: one Unix socket to one QEMU, commands answered in order.
// QMP sends the greeting, then one JSON object per line: replies ({return} / {error})
// in command order, and asynchronous {event}s between them.
import { connect, type Socket } from 'node:net';
import { ShoalError } from '../../../protocol/index.ts';

interface Pending {
  resolve: (value: unknown) => void;
  reject: (e: Error) => void;
  command: string;
}

export interface Qmp {
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T>;
  close(): void;
}

/** Connects (retrying while QEMU creates the socket) and negotiates capabilities. */
export async function connectQmp(path: string, timeoutMs = 10_000): Promise<Qmp> {
  const deadline = Date.now() + timeoutMs;
  let socket: Socket | undefined;
  let last: unknown;
  while (!socket && Date.now() < deadline) {
    try {
      socket = await new Promise<Socket>((resolve, reject) => {
        const s = connect(path);
        s.once('connect', () => {
          s.off('error', reject);
          resolve(s);
        });
        s.once('error', reject);
      });
    } catch (e) {
      last = e;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  if (!socket) throw new ShoalError('unavailable', `QMP socket ${path} did not answer: ${(last as Error | undefined)?.message}`);
  const s = socket;
  const queue: Pending[] = [];
  let greeted: () => void = () => {};
  const greeting = new Promise<void>((r) => (greeted = r));
  let buffer = '';
  let closedError: Error | undefined;
  s.setEncoding('utf8');
  s.on('data', (chunk: string) => {
    buffer += chunk;
    for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
      const line = buffer.slice(0, nl).trim();
      buffer = buffer.slice(nl + 1);
      if (!line) continue;
      const msg = JSON.parse(line) as { QMP?: unknown; event?: string; return?: unknown; error?: { class: string; desc: string } };
      if (msg.QMP) greeted();
      else if (msg.event) continue;
      else {
        const p = queue.shift();
        if (!p) continue;
        if (msg.error) p.reject(new ShoalError('internal', `QMP ${p.command}: ${msg.error.class}: ${msg.error.desc}`));
        else p.resolve(msg.return);
      }
    }
  });
  const fail = (e: Error): void => {
    closedError = e;
    for (const p of queue.splice(0)) p.reject(e);
  };
  s.on('error', (e) => fail(new ShoalError('unavailable', `QMP connection lost: ${e.message}`)));
  s.on('close', () => fail(new ShoalError('unavailable', 'QMP connection closed (QEMU exited?)')));
  const execute = <T,>(command: string, args?: Record<string, unknown>): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      if (closedError) return reject(closedError);
      queue.push({ resolve: resolve as (v: unknown) => void, reject, command });
      s.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + '\n');
    });
  await Promise.race([greeting, new Promise((_, reject) => setTimeout(() => reject(new ShoalError('timeout', 'no QMP greeting')), timeoutMs))]);
  await execute('qmp_capabilities');
  return { execute, close: () => s.destroy() };
}
