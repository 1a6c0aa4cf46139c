// The drivers a host offers, the ones it keeps on standby for what an earlier run
// started, and their fingerprints (cached: a fingerprint runs commands).
import { createDriver, drivers as builtIn, type RuncHardeningOptions } from './drivers/index.ts';
import type { Driver, DriverFingerprint } from './drivers/driver.ts';
import type { HostState } from './host-state.ts';
import type { Logger } from './ports.ts';
import type { DriverName } from './drivers/index.ts';

export type DriverSet = Partial<Record<DriverName, Driver>>;
export type MakeDriver = (name: DriverName) => Promise<Driver>;

export interface HostDrivers {
  /** Offered to plans. */
  drivers: DriverSet;
  /** Offered to no plan, kept to recover (or clean up) what they ran before. */
  standby: DriverSet;
}

/** The host's standard driver factory: settings under dataDir, warnings to the log, runc's hardening switches. */
export function driverFactory(dataDir: string, log: Logger, runc?: RuncHardeningOptions): MakeDriver {
  return (name) => createDriver(name, { dataDir, log: (message: string) => log.warn({ driver: name }, message), ...(runc ? { runc } : {}) });
}

/**
 * The default driver and the ones named, plus a standby driver for every other built-in
 * driver an instance on disk was started with.
 */
export async function openDrivers(options: {
  defaultDriver: DriverName;
  names?: DriverName[];
  state: Pick<HostState, 'list'>;
  make: MakeDriver;
}): Promise<HostDrivers> {
  const drivers: DriverSet = {};
  for (const name of new Set([options.defaultDriver, ...(options.names ?? [])])) drivers[name] = await options.make(name);
  const standby: DriverSet = {};
  for (const r of (await options.state.list()).records) {
    if (drivers[r.driver] || standby[r.driver] || !Object.hasOwn(builtIn, r.driver)) continue;
    standby[r.driver] = await options.make(r.driver);
  }
  return { drivers, standby };
}

export interface FingerprintCache {
  /** The driver's fingerprint, at most ttlMs old; a failing fingerprint is an unhealthy one. */
  get(driver: Driver): Promise<DriverFingerprint>;
}

export function createFingerprintCache(options: { ttlMs?: number; now?: () => number } = {}): FingerprintCache {
  const ttlMs = options.ttlMs ?? 30_000;
  const now = options.now ?? Date.now;
  const cache = new Map<string, { at: number; value: DriverFingerprint }>();
  return {
    async get(d) {
      const hit = cache.get(d.name);
      if (hit && now() - hit.at < ttlMs) return hit.value;
      const value = await d.fingerprint().catch((e: unknown): DriverFingerprint => ({ healthy: false, detail: String(e), attributes: {} }));
      cache.set(d.name, { at: now(), value });
      return value;
    },
  };
}
