// The one registration file of the built-in drivers: name → factory. A new driver is a
// folder plus one line here. Consumers read `capabilities`, never a driver's name.
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import type { Driver } from './driver.ts';
import { createProcessDriver } from './process/index.ts';
import { createRuncDriver } from './runc/index.ts';

export const drivers = {
  runc: createRuncDriver,
  process: createProcessDriver,
} as const;

export type DriverName = keyof typeof drivers;

export { capabilities as processCapabilities } from './process/index.ts';
export { capabilities as runcCapabilities, ensureShim } from './runc/index.ts';
export type { ProcessDriverOptions } from './process/index.ts';
export type { RuncDriverOptions } from './runc/index.ts';
import type { RuncDriverOptions } from './runc/index.ts';

/** The runc settings a host may change (all on by default; off only to compare or debug). */
export type RuncHardeningOptions = Pick<RuncDriverOptions, 'userNamespace' | 'boundedRoot' | 'logMaxBytes'>;
export * from './driver.ts';

/** An executable named `name` on $PATH, or undefined. */
export async function findOnPath(name: string, pathVar = process.env.PATH ?? ''): Promise<string | undefined> {
  for (const dir of pathVar.split(':')) {
    if (!dir) continue;
    try {
      await access(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      // next
    }
  }
  return undefined;
}

/** runc when its binary is on PATH and we are root; otherwise process (which does not isolate). */
export async function defaultDriverName(): Promise<'runc' | 'process'> {
  return process.getuid?.() === 0 && (await findOnPath('runc')) !== undefined ? 'runc' : 'process';
}

/**
 * A driver with this host's standard settings: runc keeps its state in <dataDir>/runc
 * (its own `runc --root`) and puts instances in the cgroup shoal/<id>.
 */
export async function createDriver(
  name: DriverName,
  options: { dataDir: string; log?: (message: string) => void; runc?: RuncHardeningOptions },
): Promise<Driver> {
  const log = options.log === undefined ? {} : { log: options.log };
  switch (name) {
    case 'runc':
      return drivers.runc({ runcRoot: join(options.dataDir, 'runc'), ...options.runc, ...log });
    case 'process':
      return drivers.process(log);
    default: {
      const never: never = name;
      throw new Error(`unknown driver ${String(never)}`);
    }
  }
}
