// What a driver can do, as every role sees it: hosts declare it in their reports, the
// provider's placement filters on it. Drivers themselves live in src/host/drivers/.

export type Isolation = 'none' | 'namespaces' | 'vm' | 'isolate' | 'wasm';

/** What the code of a driver can do: one static value per driver. */
export interface DriverCapabilities {
  isolation: Isolation;
  canPause: boolean;
  /** Commit the instance's writable layer / memory to something restorable. */
  canSnapshot: boolean;
  canMigrate: boolean;
  canClone: boolean;
  /** Enforces the plan's memory / cpu / pids limits. */
  enforcesLimits: boolean;
}
