// The starter echo service's program (see echo.ts): runs inside its instance.
import { readdirSync } from 'node:fs';
import { hostname, networkInterfaces } from 'node:os';
import { serve, type Handlers } from '../../service/index.ts';
import { StarterEcho } from './echo.ts';

/** A directory listing, or nothing where the instance cannot read it (no /sys, no /proc). */
const list = (read: () => string[]): string[] => {
  try {
    return read();
  } catch {
    return [];
  }
};

export const handlers: Handlers<typeof StarterEcho> = {
  Echo: (input) => input,
  Inspect: () => ({
    pid: process.pid,
    hostname: hostname(),
    uid: process.getuid?.() ?? -1,
    interfaces: [...new Set([...Object.keys(networkInterfaces()), ...list(() => readdirSync('/sys/class/net'))])].sort(),
    processes: list(() => readdirSync('/proc')).filter((d) => /^\d+$/.test(d)).length,
  }),
};

if (import.meta.main) await serve(StarterEcho, handlers);
