// The echo service on shoal/service: the instance contract (socket, /healthz, JSON
// operations, structured errors, SIGTERM) comes from serve(); what is left is the
// behaviour. Run it: `SHOAL_LISTEN=/tmp/echo.sock node examples/echo/service.ts`.
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { hostname, networkInterfaces } from 'node:os';
import { serve, type Handlers } from '../../src/service/index.ts';
import { EchoWithProbes } from './echo.ts';

const held: Buffer[] = []; // Hog's allocations, kept reachable so they are never collected
const list = (read: () => string[]): string[] => {
  try {
    return read();
  } catch {
    return [];
  }
};

export const handlers: Handlers<typeof EchoWithProbes> = {
  Echo: (input) => input,
  Inspect: () => ({
    pid: process.pid,
    hostname: hostname(),
    uid: process.getuid?.() ?? -1,
    interfaces: [...new Set([...Object.keys(networkInterfaces()), ...list(() => readdirSync('/sys/class/net'))])].sort(),
    processes: list(() => readdirSync('/proc')).filter((d) => /^\d+$/.test(d)).length,
  }),
  Crash: ({ code }) => {
    setTimeout(() => process.exit(code), 10);
    return {};
  },
  Hog: ({ mb }) => {
    let got = 0;
    const timer = setInterval(() => {
      if (got >= mb) return clearInterval(timer);
      held.push(Buffer.allocUnsafe(16 << 20).fill(1)); // filled, so the pages are really used
      got += 16;
    }, 10);
    return { mb };
  },
  Spawn: async ({ count }) => {
    const children: ChildProcess[] = [];
    const errors = new Set<string>();
    await Promise.all(
      Array.from(
        { length: count },
        () =>
          new Promise<void>((done) => {
            try {
              const child = spawn(process.execPath, ['-e', 'setInterval(()=>{},1e9)'], { stdio: 'ignore' });
              child.once('spawn', () => {
                children.push(child);
                done();
              });
              child.once('error', (e: NodeJS.ErrnoException) => {
                errors.add(e.code ?? e.message);
                done();
              });
            } catch (e) {
              errors.add((e as NodeJS.ErrnoException).code ?? (e as Error).message);
              done();
            }
          }),
      ),
    );
    await new Promise((r) => setTimeout(r, 200)); // a child that could not start its threads dies here
    const spawned = children.filter((c) => c.exitCode === null && c.signalCode === null).length;
    for (const c of children) c.kill('SIGKILL');
    return { spawned, ...(errors.size > 0 ? { errors: [...errors] } : {}) };
  },
  Connect: ({ host, port }) =>
    new Promise((resolve) => {
      const socket = tcpConnect({ host, port, timeout: 1000 });
      const end = (reply: { connected: boolean; error?: string }) => {
        socket.destroy();
        resolve(reply);
      };
      socket.once('connect', () => end({ connected: true }));
      socket.once('timeout', () => end({ connected: false, error: 'timeout' }));
      socket.once('error', (e: NodeJS.ErrnoException) => end({ connected: false, error: e.code ?? e.message }));
    }),
};

// Started only as the program itself, so tests and other code can import `handlers`.
if (import.meta.main) await serve(EchoWithProbes, handlers);
