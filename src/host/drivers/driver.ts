// The one interface every instance driver implements (Nomad's DriverPlugin in small).
// The host agent talks only to this; placement reads `capabilities`, never a driver's name.

import type { DriverCapabilities, DriverFingerprint, Isolation, MigrationOffer } from '../../protocol/index.ts';

// Defined in protocol: hosts report them and the provider places on them (an offer crosses hosts).
export type { DriverCapabilities, DriverFingerprint, Isolation, MigrationOffer };

export interface InstanceResources {
  memoryBytes: number;
  /** CPU share in millicores (1000 = one core). */
  cpuMillis: number;
  pids: number;
  /** Size bound of the instance's writable root layer (the agent mounts it; default in the agent). */
  diskBytes?: number;
}

/** Everything a driver needs to start one instance; the host agent prepares it. */
export interface InstanceSpec {
  id: string;
  /** The assembled root file system (an overlayfs mount for runc; a plain dir for process). */
  rootfs: string;
  /** The root's layers (diff ids, bottom first): a key for drivers that cache a root built per layer stack (vm). */
  rootLayers?: string[];
  /** The program and its arguments, resolved inside the root. */
  args: string[];
  env: string[];
  cwd: string;
  /** uid:gid the service runs as inside. */
  user: { uid: number; gid: number };
  resources: InstanceResources;
  /**
   * Host path of the instance's listening socket. The driver creates it (in a directory
   * only the host can write) and passes the listening descriptor to the instance as fd 3
   * with LISTEN_FDS=1; the host connects here, never to a path the instance can replace.
   */
  listenSocket: string;
  /**
   * The $PORT contract: the program listens on TCP 127.0.0.1:<tcpPort> in its own network
   * namespace instead of using the socket at fd 3. The driver runs shoal-port-bridge in
   * front of it (inside the instance, with the instance's confinement), which holds the
   * listener and relays each connection to the port. Drivers without it refuse the spec.
   */
  tcpPort?: number;
  /** Host-owned directory of the import sockets, mounted read-only at /run/shoal/imports (runc). */
  importsDir: string;
  /** Where the driver writes the instance's stdout+stderr. */
  logFile: string;
  /** Per-instance scratch space for the driver (bundle dir, pid files, …). */
  stateDir: string;
}

export type ExitReason = 'exited' | 'crashed' | 'oom' | 'killed';

export interface InstanceExit {
  reason: ExitReason;
  /** Exit code when the process exited; undefined if only a signal or nothing is known. */
  code: number | undefined;
  signal: string | undefined;
  at: number;
}

export interface InstanceStats {
  memoryBytes: number | undefined;
  cpuUsageNanos: number | undefined;
  pids: number | undefined;
}

export interface RunningInstance {
  readonly id: string;
  /** Host pid of the instance's init, when known. */
  readonly pid: number | undefined;
  /** Resolves once, when the instance stops for any reason (promptly: within a second). */
  readonly exited: Promise<InstanceExit>;
  stop(options?: { graceMs?: number }): Promise<void>;
  stats(): Promise<InstanceStats>;
}

export interface PausableInstance extends RunningInstance {
  pause(): Promise<void>;
  resume(): Promise<void>;
}

export function isPausable(i: RunningInstance): i is PausableInstance {
  return typeof (i as Partial<PausableInstance>).pause === 'function';
}

/** An instance found on disk / by the runtime after a host restart. */
export interface RecoveredInstance {
  id: string;
  status: 'running' | 'paused' | 'stopped';
  instance: RunningInstance | undefined;
}

export interface Driver {
  readonly name: string;
  readonly capabilities: DriverCapabilities;
  fingerprint(): Promise<DriverFingerprint>;
  /** Create and start. Resolves when the process is started (readiness is the agent's job). */
  start(spec: InstanceSpec): Promise<RunningInstance>;
  /** Re-attach to what this driver left running (ids the agent knows of), clean the rest. */
  recover(known: Array<{ id: string; stateDir: string }>): Promise<RecoveredInstance[]>;
  /** Remove everything of an instance that start() created (idempotent). */
  destroy(id: string, stateDir: string): Promise<void>;
  /** Release what the driver holds (pre-created containers, watchers); running instances stay. */
  close(): Promise<void>;
}

/**
 * Optional: a driver that can do the slow part of start() ahead of time (runc: `runc
 * create`, ~35 ms of the ~60 ms), so that a later start() with the same spec only starts
 * the program. A prepared instance holds its id; destroy() or close() discard it.
 */
export interface PreparingDriver extends Driver {
  prepare(spec: InstanceSpec): Promise<void>;
}

/** uid/gid 0..count-1 inside an instance are hostId..hostId+count-1 on the host. */
export interface IdMapping {
  hostId: number;
  count: number;
}

/**
 * Optional: a driver whose instances run in a user namespace with this mapping (one per
 * host). The agent mounts their roots to match (id-mapped layers, upper owned by hostId).
 */
export interface IdMappedDriver extends Driver {
  readonly idMapping: IdMapping;
}

export function idMappingOf(d: Driver): IdMapping | undefined {
  return (d as Partial<IdMappedDriver>).idMapping;
}

/** Optional: a driver whose instances' writable root layer the agent bounds (InstanceResources.diskBytes). */
export interface RootBoundingDriver extends Driver {
  readonly boundsRoot: true;
}

export function boundsRoot(d: Driver): boolean {
  return (d as Partial<RootBoundingDriver>).boundsRoot === true;
}

export function canPrepare(d: Driver): d is PreparingDriver {
  return typeof (d as Partial<PreparingDriver>).prepare === 'function';
}

// ---- Live state (issues 13, 14, 15) -------------------------------------------------
// One shape for every driver that can hold running state (wasm, isolate, vm). The agent
// owns the consistency question: it quiesces the instance (no message in flight, new ones
// held) before calling capture(), and stores the result in the store as an OCI artifact.
// Drivers only capture and restore bytes; they never talk to the store or the provider.

/** A running instance's state, captured by its driver, written to a host-owned file. */
export interface CapturedState {
  /** The artifact's layer media type, e.g. `application/vnd.shoal.state.wasm.v1+zstd`. */
  mediaType: string;
  /** Host-owned file holding the state (already compressed); the agent moves or deletes it. */
  file: string;
  /** Recorded with the artifact: driver, image digest, memory size, format version… */
  annotations: Record<string, string>;
}

/** Optional: an instance whose running state its driver can capture (the agent has quiesced it). */
export interface CapturingInstance extends RunningInstance {
  /** Capture into a new file under `dir` (host-owned). The instance keeps running after. */
  capture(dir: string): Promise<CapturedState>;
}

export function canCapture(i: RunningInstance): i is CapturingInstance {
  return typeof (i as Partial<CapturingInstance>).capture === 'function';
}

/** Optional: a driver that can start an instance from a captured state instead of from the image's start. */
export interface RestoringDriver extends Driver {
  /** Like start(), but the instance continues from `state` (same image; the spec is the new instance's). */
  restore(spec: InstanceSpec, state: CapturedState): Promise<RunningInstance>;
}

export function canRestore(d: Driver): d is RestoringDriver {
  return typeof (d as Partial<RestoringDriver>).restore === 'function';
}

/**
 * Optional: a driver with a faster fork than capture + restore (wasm: copy the non-zero
 * pages in process; QuickJS: copy the heap). The source keeps serving.
 */
export interface ForkingDriver extends Driver {
  fork(source: RunningInstance, spec: InstanceSpec): Promise<RunningInstance>;
}

export function canFork(d: Driver): d is ForkingDriver {
  return typeof (d as Partial<ForkingDriver>).fork === 'function';
}

// ---- Live migration (issue 14) --------------------------------------------------------
// Pre-copy: the source keeps running while its memory (and disk) is copied to a target that
// waits for it, and stops only for the last pages. The target makes an offer (where to send,
// a key that lives for this one move, its own facts), the provider carries it to the source
// over the hosts' authenticated control APIs, and the source sends. Drivers never talk to the
// provider; the agent holds the source's messages around the stop (MigrationHold).

// MigrationOffer (src/protocol/live-migration.ts): where to send, the one-move key, the target's facts.

/** A target waiting for its state. */
export interface IncomingMigration {
  readonly offer: MigrationOffer;
  /**
   * The instance, once its state has arrived and it runs; rejects (its process and disks
   * removed) if the stream fails, is refused (wrong key), or does not come in time.
   */
  readonly instance: Promise<RunningInstance>;
  /** Gives up: the target's process and disks go, and `instance` rejects. */
  cancel(): Promise<void>;
}

/** Optional: a driver that can start an instance as the target of a live migration. */
export interface LiveReceivingDriver extends Driver {
  receive(spec: InstanceSpec): Promise<IncomingMigration>;
}

export function canReceiveLive(d: Driver): d is LiveReceivingDriver {
  return typeof (d as Partial<LiveReceivingDriver>).receive === 'function';
}

/** The agent's part in a live migration: messages are held around the source's stop. */
export interface MigrationHold {
  /**
   * Called once, before the instance stops for the switch-over: new messages are held from
   * the call on; resolves once none is in flight. The driver does not switch over until it
   * has resolved; the agent lets the messages go (failure) or answers them `gone` (removal).
   */
  hold(): Promise<void>;
}

export interface LiveMigrationStats {
  /** Start of the migration to its end, as the driver measured it. */
  totalMs: number;
  /** Time the instance ran nowhere (stopped on the source, not yet running on the target), as the driver reports it. */
  downtimeMs: number;
  /** From hold() to the end: how long new messages waited at the least. */
  heldMs: number;
  /** Bytes of state sent, as the driver counts them (vm: RAM and devices; the disk's are not counted). */
  bytes: number;
}

/** Optional: an instance its driver can send to a LiveReceivingDriver's offer while it runs. */
export interface LiveMigratingInstance extends RunningInstance {
  /**
   * Pre-copy to `offer`. Resolves once the target has everything: the instance is stopped
   * here for good (the caller removes it). Rejects with the instance running here as before
   * (the target then fails on its own: its stream ended unfinished).
   */
  migrateTo(offer: MigrationOffer, hold: MigrationHold): Promise<LiveMigrationStats>;
  /**
   * After a migrateTo that completed but whose target then failed and is gone: the instance
   * runs here again from where it stopped. Never while the target may run (two copies).
   */
  resumeHere(): Promise<void>;
}

export function canMigrateLive(i: RunningInstance): i is LiveMigratingInstance {
  return typeof (i as Partial<LiveMigratingInstance>).migrateTo === 'function';
}
