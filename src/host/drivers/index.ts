// The one registration file of the built-in drivers: name → factory. A new driver is a
// folder plus one line here. Consumers read `capabilities`, never a driver's name.
import { join } from 'node:path';
import type { Driver } from './driver.ts';
import { createIsolateDriver } from './isolate/index.ts';
import { createProcessDriver } from './process/index.ts';
import { createRuncDriver } from './runc/index.ts';
import { createWasmDriver } from './wasm/index.ts';
import { createVmDriver } from './vm/index.ts';

/** What every driver's factory gets from the host: where to keep its state, where to log. */
export interface DriverSettings {
  dataDir: string;
  log?: (message: string) => void;
  /** runc's hardening switches (all on by default); other drivers ignore them. */
  runc?: RuncHardeningOptions;
}

/**
 * The built-in drivers, name → factory with this host's standard settings: runc keeps its
 * state in <dataDir>/runc (its own `runc --root`) and puts instances in the cgroup shoal/<id>.
 */
export const drivers = {
  runc: (s: DriverSettings): Driver =>
    createRuncDriver({ runcRoot: join(s.dataDir, 'runc'), ...s.runc, ...(s.log === undefined ? {} : { log: s.log }) }),
  process: (s: DriverSettings): Driver => createProcessDriver(s.log === undefined ? {} : { log: s.log }),
  wasm: (s: DriverSettings): Driver => createWasmDriver(s.log === undefined ? {} : { log: s.log }),
  isolate: (s: DriverSettings): Driver => createIsolateDriver({ dataDir: s.dataDir, ...(s.log === undefined ? {} : { log: s.log }) }),
  vm: (s: DriverSettings): Driver => createVmDriver({ dataDir: join(s.dataDir, 'vm'), ...(s.log === undefined ? {} : { log: s.log }) }),
} as const satisfies Record<string, (settings: DriverSettings) => Driver>;

/** The drivers this code has; the wire's DriverName (src/protocol/driver.ts) is any name. */
export type DriverName = keyof typeof drivers;

export const driverNames = Object.keys(drivers) as DriverName[];

export function isDriverName(name: string): name is DriverName {
  return Object.hasOwn(drivers, name);
}

export { capabilities as processCapabilities } from './process/index.ts';
export { capabilities as isolateCapabilities } from './isolate/index.ts';
export type { IsolateDriverOptions } from './isolate/index.ts';
export { capabilities as runcCapabilities, ensureShim } from './runc/index.ts';
export { capabilities as wasmCapabilities, STATE_MEDIA_TYPE as WASM_STATE_MEDIA_TYPE } from './wasm/index.ts';
export type { ProcessDriverOptions } from './process/index.ts';
export { capabilities as vmCapabilities, VM_STATE_MEDIA_TYPE } from './vm/index.ts';
export type { VmDriverOptions } from './vm/index.ts';
export type { RuncDriverOptions } from './runc/index.ts';
import type { RuncDriverOptions } from './runc/index.ts';

/** The runc settings a host may change (all on by default; off only to compare or debug). */
export type RuncHardeningOptions = Pick<RuncDriverOptions, 'userNamespace' | 'boundedRoot' | 'logMaxBytes'>;
export * from './driver.ts';

export { findOnPath } from './shared/proc.ts';
import { findOnPath } from './shared/proc.ts';

/** runc when its binary is on PATH and we are root; otherwise process (which does not isolate). */
export async function defaultDriverName(): Promise<DriverName> {
  return process.getuid?.() === 0 && (await findOnPath('runc')) !== undefined ? 'runc' : 'process';
}

/** A built-in driver with this host's standard settings. */
export async function createDriver(name: DriverName, settings: DriverSettings): Promise<Driver> {
  return drivers[name](settings);
}
