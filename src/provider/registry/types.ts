// What the registry stores and returns: typed records, never raw rows.
import type { DeploymentTimeline, EndpointReference, HostReport, ServiceDescription, ApiRole, AuditEntry } from '../../protocol/index.ts';
import type { Dialect } from './sql-driver.ts';

export interface ServiceRecord {
  name: string;
  version: string;
  /** Validated, with every default applied. */
  description: ServiceDescription;
  /** The version that messages go to; the last one put. */
  current: boolean;
  createdAt: number;
  updatedAt: number;
}

export type HostState = 'alive' | 'suspect' | 'dead';

export interface HostRegistration {
  id: string;
  controlUrl: string;
  dataUrl: string;
  labels?: Record<string, string>;
  /** Free-form: what the host declared at registration (drivers and their capabilities). */
  capabilities?: Record<string, unknown>;
  /** The bearer token the provider uses on the host's control API. A secret: never shown by the API. */
  controlToken?: string;
}

export interface HostRecord {
  id: string;
  controlUrl: string;
  dataUrl: string;
  labels: Record<string, string>;
  capabilities: Record<string, unknown>;
  /** The bearer token for the host's control API (a secret: the API shows records without it). */
  controlToken: string | undefined;
  /** The latest report, if any arrived since registration. */
  lastReport: HostReport | undefined;
  /** When the provider last heard from the host (registration or report), epoch ms. */
  lastSeen: number;
  state: HostState;
  registeredAt: number;
}

export interface HostStateChange {
  host: HostRecord;
  from: HostState;
}

export type DeploymentState = 'pending' | 'deploying' | 'ready' | 'failed' | 'stopped';
/** States that hold the service's one in-flight slot. */
export const IN_FLIGHT_STATES: readonly DeploymentState[] = ['pending', 'deploying'];

export interface DeploymentRecord {
  id: string;
  service: string;
  version: string;
  hostId: string | undefined;
  state: DeploymentState;
  instanceId: string | undefined;
  endpoint: EndpointReference | undefined;
  timeline: DeploymentTimeline | undefined;
  error: string | undefined;
  /** The provider that claimed it (claimDeployment). */
  claimedBy: string | undefined;
  /** While pending/deploying: after this epoch ms another provider may take the claim over. */
  leaseUntil: number | undefined;
  /** A ready instance frozen in memory (host pause) since this epoch ms; undefined when running. */
  pausedAt: number | undefined;
  createdAt: number;
  updatedAt: number;
}

export interface NewDeployment {
  /** Default: a random UUID. */
  id?: string;
  service: string;
  version: string;
  state: DeploymentState;
  hostId?: string;
  instanceId?: string;
  endpoint?: EndpointReference;
  timeline?: DeploymentTimeline;
  error?: string;
  claimedBy?: string;
  leaseUntil?: number;
  /** Default Date.now(). */
  now?: number;
}

/** Fields to change; `undefined` leaves a field alone, `null` clears it. */
export interface DeploymentPatch {
  state?: DeploymentState;
  hostId?: string | null;
  instanceId?: string | null;
  endpoint?: EndpointReference | null;
  timeline?: DeploymentTimeline | null;
  error?: string | null;
  claimedBy?: string | null;
  leaseUntil?: number | null;
  pausedAt?: number | null;
  /** Apply only if the deployment is in one of these states, else ShoalError('conflict'). */
  ifState?: DeploymentState | readonly DeploymentState[];
  /** Default Date.now(). */
  now?: number;
}

export interface DeploymentFilter {
  service?: string;
  state?: DeploymentState | readonly DeploymentState[];
  hostId?: string;
}

export interface DeploymentClaim {
  service: string;
  version: string;
  /** Who deploys; recorded as `claimedBy`. */
  providerId: string;
  now: number;
  /** How long the claim holds without renewClaim; past it, another provider may take over. */
  leaseMs: number;
  /**
   * 'cold' (default): claim only if the service has no ready and no in-flight deployment
   * (the activator's scale-from-zero). 'add': claim unless one is in flight (scale-up,
   * replacement of a crashed instance).
   */
  mode?: 'cold' | 'add';
  hostId?: string;
}

export type ClaimResult =
  | {
      claimed: true;
      deployment: DeploymentRecord;
      /** The expired claim this one replaced (now 'failed'), if any. */
      tookOver?: DeploymentRecord;
    }
  | {
      claimed: false;
      /** The in-flight deployment (or, in 'cold' mode, a ready one) that made the claim unnecessary. */
      existing: DeploymentRecord;
    };

export interface NewEvent {
  /** Default Date.now(). */
  at?: number;
  kind: string;
  service?: string;
  hostId?: string;
  instanceId?: string;
  detail?: unknown;
}

export interface EventRecord {
  id: number;
  at: number;
  kind: string;
  service: string | undefined;
  hostId: string | undefined;
  instanceId: string | undefined;
  detail: unknown;
}

export interface EventFilter {
  service?: string;
  hostId?: string;
  kind?: string;
  /** Only events after this id, oldest first (for following the stream). */
  afterId?: number;
  /** Default 100, at most 10 000. Without afterId: the newest `limit`, oldest first. */
  limit?: number;
}

/** Why a state was captured. */
export type SavedStateReason = 'snapshot' | 'suspend' | 'farm' | 'schedule';

/** A captured instance state (an OCI artifact in the store) that a deployment may start `from`. */
export interface SavedStateRecord {
  id: string;
  service: string;
  version: string;
  /** The state artifact's manifest digest in the store. */
  digest: string;
  size: number;
  /** The driver that captured it: only that driver restores it. */
  driver: string;
  sourceInstance: string | undefined;
  sourceHost: string | undefined;
  reason: SavedStateReason;
  /** A name the caller gave (a farm's snapshot id, an operator's label). */
  label: string | undefined;
  createdAt: number;
  /** Past this epoch ms the state may be deleted (expireStates); undefined: kept until removed. */
  expiresAt: number | undefined;
}

export interface NewSavedState {
  /** Default: a random UUID. */
  id?: string;
  service: string;
  version: string;
  digest: string;
  size: number;
  driver: string;
  sourceInstance?: string;
  sourceHost?: string;
  reason: SavedStateReason;
  label?: string;
  createdAt: number;
  expiresAt?: number;
}

export interface SavedStateFilter {
  service?: string;
  reason?: SavedStateReason;
  label?: string;
  /** Only states not expired at this epoch ms. */
  liveAt?: number;
}

/** One provider's view of an instance's traffic since it last reported. */
export interface TrafficReport {
  instanceId: string;
  /** Epoch ms of the newest message this provider sent to the instance. */
  lastMessageAt: number;
  /** Messages this provider sent to the instance since its previous report (added up). */
  messages: number;
}

/** An API token as stored: the SHA-256 of its secret, never the secret. */
export interface ApiTokenRecord {
  id: string;
  /** Hex SHA-256 of the whole token text. */
  hash: string;
  role: ApiRole;
  /** invoke tokens: the services they may call (undefined: all). */
  services: string[] | undefined;
  note: string | undefined;
  createdAt: number;
  expiresAt: number | undefined;
  revokedAt: number | undefined;
}

export interface NewApiToken {
  id: string;
  hash: string;
  role: ApiRole;
  services?: string[];
  note?: string;
  createdAt: number;
  expiresAt?: number;
}

export type AuditRecord = AuditEntry;
export type NewAuditEntry = Omit<AuditEntry, 'id'>;

export interface AuditFilter {
  service?: string;
  /** Epoch ms, inclusive. */
  since?: number;
  /** Epoch ms, exclusive. */
  until?: number;
  tokenId?: string;
  /** Default 100, at most 10 000: the newest `limit`, oldest first. */
  limit?: number;
}

export interface RegistryInfo {
  dialect: Dialect;
  /** The SQLite file, or the PostgreSQL URL without its password. */
  location: string;
  schemaVersion: number;
  /** SQLite only. */
  journalMode?: string;
  /** SQLite only: 2 = FULL. */
  synchronous?: number;
}

export interface Registry {
  readonly dialect: Dialect;
  info(): Promise<RegistryInfo>;

  /** Validates (ShoalError 'invalid' naming the field), stores, and makes this version current. */
  putService(description: unknown, now?: number): Promise<ServiceRecord>;
  /** The current version, or the named one; undefined if unknown. */
  getService(name: string, version?: string): Promise<ServiceRecord | undefined>;
  /** Current versions, by name. */
  listServices(): Promise<ServiceRecord[]>;
  /** Every stored version of one service, oldest first. */
  listServiceVersions(name: string): Promise<ServiceRecord[]>;
  /**
   * Deletes every version and returns the deployments still pending, deploying or ready,
   * for the caller to undeploy (and then mark stopped). ShoalError 'not-found' if unknown.
   */
  removeService(name: string): Promise<DeploymentRecord[]>;

  /** Registers (or re-registers) a host: state alive, lastSeen now. */
  upsertHost(host: HostRegistration, now?: number): Promise<HostRecord>;
  getHost(id: string): Promise<HostRecord | undefined>;
  /** Stores the report, refreshes URLs and lastSeen, makes the host alive. ShoalError 'not-found' if unregistered. */
  recordHostReport(id: string, report: HostReport, now: number): Promise<{ host: HostRecord; previousState: HostState }>;
  /** recordHostReport for many hosts in one transaction; unregistered ones come back undefined (in order). */
  recordHostReports(entries: ReadonlyArray<{ id: string; report: HostReport }>, now: number): Promise<Array<{ host: HostRecord; previousState: HostState } | undefined>>;
  listHosts(): Promise<HostRecord[]>;
  removeHost(id: string): Promise<boolean>;
  /**
   * Demotes hosts not heard from: alive → suspect after suspectAfterMs, → dead after
   * deadAfterMs. Returns only the hosts this call changed, so when several providers
   * run it at once each transition is reported to exactly one of them.
   */
  markHosts(now: number, limits: { suspectAfterMs: number; deadAfterMs: number }): Promise<HostStateChange[]>;

  /** Exactly one caller wins a service's in-flight slot, across connections and providers. */
  claimDeployment(claim: DeploymentClaim): Promise<ClaimResult>;
  /** Extends a claim's lease; false if the claim is no longer this provider's or no longer in flight. */
  renewClaim(id: string, providerId: string, now: number, leaseMs: number): Promise<boolean>;
  /** Inserts as given (e.g. adopting an instance found on a host). ShoalError 'conflict' if it would be a second in-flight deployment. */
  createDeployment(deployment: NewDeployment): Promise<DeploymentRecord>;
  getDeployment(id: string): Promise<DeploymentRecord | undefined>;
  /** ShoalError 'not-found', or 'conflict' (ifState not met, or a second in-flight deployment). */
  updateDeployment(id: string, patch: DeploymentPatch): Promise<DeploymentRecord>;
  /** Oldest first. */
  listDeployments(filter?: DeploymentFilter): Promise<DeploymentRecord[]>;

  appendEvent(event: NewEvent): Promise<EventRecord>;
  listEvents(filter?: EventFilter): Promise<EventRecord[]>;

  /** ShoalError 'conflict' if the id is taken. */
  createApiToken(token: NewApiToken): Promise<ApiTokenRecord>;
  getApiToken(id: string): Promise<ApiTokenRecord | undefined>;
  /** Oldest first, revoked ones included. */
  listApiTokens(): Promise<ApiTokenRecord[]>;
  /** Marks it revoked at `now`; false if unknown or already revoked. */
  revokeApiToken(id: string, now: number): Promise<boolean>;

  appendAudit(entry: NewAuditEntry): Promise<AuditRecord>;
  listAudit(filter?: AuditFilter): Promise<AuditRecord[]>;

  /** ShoalError 'conflict' if the id is taken. */
  saveState(state: NewSavedState): Promise<SavedStateRecord>;
  getState(id: string): Promise<SavedStateRecord | undefined>;
  /** Newest first. */
  listStates(filter?: SavedStateFilter): Promise<SavedStateRecord[]>;
  /** False if unknown. The artifact in the store is the caller's to collect. */
  removeState(id: string): Promise<boolean>;
  /** Deletes the states expired at `now` and returns them (each to exactly one caller). */
  expireStates(now: number): Promise<SavedStateRecord[]>;

  /** Records what this provider saw (upsert per instance and provider). */
  recordTraffic(providerId: string, reports: readonly TrafficReport[]): Promise<void>;
  /** For each instance, the newest message any provider reported; instances never reported are absent. */
  lastTraffic(instanceIds: readonly string[]): Promise<Map<string, number>>;
  /** Forgets the traffic of instances that are gone. */
  forgetTraffic(instanceIds: readonly string[]): Promise<void>;

  close(): Promise<void>;
}
