// What a driver can do, as every role sees it: hosts declare it in their reports, the
// provider's placement filters on it. Drivers themselves live in src/host/drivers/.
// TypeBox: each schema is also the static type, so a host report carries them typed.
import { Type, type Static } from '@sinclair/typebox';

/**
 * A driver's name on the wire. Open on purpose: the host's registry
 * (src/host/drivers/index.ts) is the one list of drivers, hosts report what they offer,
 * and the provider places on what hosts report (a name no host offers finds no host).
 */
export const DriverName = Type.String({ pattern: '^[a-z][a-z0-9-]{0,30}$', description: 'a driver a host offers: runc, process, …' });
export type DriverName = Static<typeof DriverName>;

export const Isolation = Type.Union([Type.Literal('none'), Type.Literal('namespaces'), Type.Literal('vm'), Type.Literal('isolate'), Type.Literal('wasm')]);
export type Isolation = Static<typeof Isolation>;

/** What the code of a driver can do: one static value per driver. */
export const DriverCapabilities = Type.Object({
  isolation: Isolation,
  canPause: Type.Boolean(),
  /** Commit the instance's writable layer / memory to something restorable. */
  canSnapshot: Type.Boolean(),
  canMigrate: Type.Boolean(),
  canClone: Type.Boolean(),
  /** Enforces the plan's memory / cpu / pids limits. */
  enforcesLimits: Type.Boolean(),
  /** Runs programs that listen on TCP $PORT (a plan's `listen`); absent: refuses such plans. */
  servesPort: Type.Optional(Type.Boolean()),
  /**
   * Moves a running instance to another host while it runs (pre-copy: the target receives,
   * the source sends; src/host/drivers/driver.ts LiveReceivingDriver). Absent: a move is
   * stop-and-copy (capture, restore elsewhere), for drivers with canMigrate.
   */
  liveMigrates: Type.Optional(Type.Boolean()),
});
export type DriverCapabilities = Static<typeof DriverCapabilities>;

/** What this host's driver can do now (runc present? KVM?), sent with every report. */
export const DriverFingerprint = Type.Object({
  healthy: Type.Boolean(),
  detail: Type.String(),
  attributes: Type.Record(Type.String(), Type.String()),
});
export type DriverFingerprint = Static<typeof DriverFingerprint>;
