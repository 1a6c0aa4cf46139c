// The registry's queries, written once for both databases (see index.ts for why plain SQL).
import { randomUUID } from 'node:crypto';
import { ShoalError, validateServiceDescription, type ServiceDescription } from '../../protocol/index.ts';
import type { HostReport } from '../../protocol/index.ts';
import { createAccessQueries } from './access-queries.ts';
import { createLiveStateQueries } from './live-state-queries.ts';
import { MIGRATIONS } from './migrations.ts';
import { isUniqueViolation, type Row, type SqlDriver, type SqlExecutor, type SqlValue } from './sql-driver.ts';
import {
  IN_FLIGHT_STATES,
  type ClaimResult,
  type DeploymentClaim,
  type DeploymentFilter,
  type DeploymentPatch,
  type DeploymentRecord,
  type DeploymentState,
  type EventFilter,
  type EventRecord,
  type HostRecord,
  type HostRegistration,
  type HostState,
  type HostStateChange,
  type NewDeployment,
  type NewEvent,
  type Registry,
  type RegistryInfo,
  type ServiceRecord,
} from './types.ts';

const IN_FLIGHT_SQL = `('pending', 'deploying')`;
const DEPLOYMENT_STATES: ReadonlySet<string> = new Set(['pending', 'deploying', 'ready', 'failed', 'stopped']);

export interface RegistryOnOptions {
  driver: SqlDriver;
  /** For info(): the file, or the URL without its password. */
  location: string;
}

export function createRegistryOn(options: RegistryOnOptions): Registry {
  const db = options.driver;
  // PostgreSQL runs READ COMMITTED: rows read to decide an update are locked first.
  // SQLite's BEGIN IMMEDIATE already excludes every other writer.
  const forUpdate = db.dialect === 'postgres' ? ' FOR UPDATE' : '';

  async function one<R extends Row>(ex: SqlExecutor, sql: string, params: readonly SqlValue[]): Promise<R | undefined> {
    return (await ex.query<R>(sql, params))[0];
  }

  // ---- services -------------------------------------------------------------

  async function putService(description: unknown, now = Date.now()): Promise<ServiceRecord> {
    const desc = validateServiceDescription(description);
    const json = JSON.stringify(desc);
    const row = await db.transaction(async (tx) => {
      await tx.query('UPDATE services SET is_current = 0 WHERE name = $1 AND is_current = 1', [desc.name]);
      return one<ServiceRow>(
        tx,
        `INSERT INTO services (name, version, description, is_current, created_at, updated_at)
         VALUES ($1, $2, $3, 1, $4, $4)
         ON CONFLICT (name, version) DO UPDATE SET
           description = excluded.description, is_current = 1,
           updated_at = CASE WHEN services.description = excluded.description THEN services.updated_at ELSE excluded.updated_at END
         RETURNING *`,
        [desc.name, desc.version, json, now],
      );
    });
    return toService(must(row, 'services insert'));
  }

  async function getService(name: string, version?: string): Promise<ServiceRecord | undefined> {
    const row =
      version === undefined
        ? await one<ServiceRow>(db, 'SELECT * FROM services WHERE name = $1 AND is_current = 1', [name])
        : await one<ServiceRow>(db, 'SELECT * FROM services WHERE name = $1 AND version = $2', [name, version]);
    return row && toService(row);
  }

  async function listServices(): Promise<ServiceRecord[]> {
    return (await db.query<ServiceRow>('SELECT * FROM services WHERE is_current = 1 ORDER BY name')).map(toService);
  }

  async function listServiceVersions(name: string): Promise<ServiceRecord[]> {
    const rows = await db.query<ServiceRow>('SELECT * FROM services WHERE name = $1 ORDER BY created_at, version', [name]);
    return rows.map(toService);
  }

  async function removeService(name: string): Promise<DeploymentRecord[]> {
    return db.transaction(async (tx) => {
      const gone = await tx.query('DELETE FROM services WHERE name = $1 RETURNING version', [name]);
      if (gone.length === 0) throw new ShoalError('not-found', `no service named ${JSON.stringify(name)}`, { field: 'name' });
      const rows = await tx.query<DeploymentRow>(
        `SELECT * FROM deployments WHERE service = $1 AND state IN ('pending', 'deploying', 'ready') ORDER BY created_at, id`,
        [name],
      );
      return rows.map(toDeployment);
    });
  }

  // ---- hosts ----------------------------------------------------------------

  async function upsertHost(host: HostRegistration, now = Date.now()): Promise<HostRecord> {
    const row = await one<HostRow>(
      db,
      `INSERT INTO hosts (id, control_url, data_url, labels, capabilities, control_token, last_report, last_seen, state, registered_at)
       VALUES ($1, $2, $3, $4, $5, $7, NULL, $6, 'alive', $6)
       ON CONFLICT (id) DO UPDATE SET
         control_url = excluded.control_url, data_url = excluded.data_url, labels = excluded.labels,
         capabilities = excluded.capabilities, control_token = excluded.control_token,
         last_seen = excluded.last_seen, state = 'alive'
       RETURNING *`,
      [host.id, host.controlUrl, host.dataUrl, JSON.stringify(host.labels ?? {}), JSON.stringify(host.capabilities ?? {}), now, host.controlToken ?? null],
    );
    return toHost(must(row, 'hosts upsert'));
  }

  async function getHost(id: string): Promise<HostRecord | undefined> {
    const row = await one<HostRow>(db, 'SELECT * FROM hosts WHERE id = $1', [id]);
    return row && toHost(row);
  }

  async function recordHostReport(id: string, report: HostReport, now: number) {
    return db.transaction(async (tx) => {
      const before = await one<{ state: HostState }>(tx, `SELECT state FROM hosts WHERE id = $1${forUpdate}`, [id]);
      if (before === undefined) throw new ShoalError('not-found', `host ${JSON.stringify(id)} is not registered`, { field: 'hostId' });
      const row = await one<HostRow>(
        tx,
        `UPDATE hosts SET last_report = $2, control_url = $3, data_url = $4, last_seen = $5, state = 'alive'
         WHERE id = $1 RETURNING *`,
        [id, JSON.stringify(report), report.controlUrl, report.dataUrl, now],
      );
      return { host: toHost(must(row, 'hosts update')), previousState: before.state };
    });
  }

  async function recordHostReports(entries: ReadonlyArray<{ id: string; report: HostReport }>, now: number) {
    if (entries.length === 0) return [];
    // One transaction for a whole round of reports: one commit (one fsync on SQLite) per
    // tick instead of one per host, which is what bounded the provider at ~1,000 hosts.
    return db.transaction(async (tx) => {
      const out: Array<{ host: HostRecord; previousState: HostState } | undefined> = [];
      for (const { id, report } of entries) {
        const before = await one<{ state: HostState }>(tx, `SELECT state FROM hosts WHERE id = $1${forUpdate}`, [id]);
        if (before === undefined) {
          out.push(undefined);
          continue;
        }
        const row = await one<HostRow>(
          tx,
          `UPDATE hosts SET last_report = $2, control_url = $3, data_url = $4, last_seen = $5, state = 'alive'
           WHERE id = $1 RETURNING *`,
          [id, JSON.stringify(report), report.controlUrl, report.dataUrl, now],
        );
        out.push({ host: toHost(must(row, 'hosts update')), previousState: before.state });
      }
      return out;
    });
  }

  async function listHosts(): Promise<HostRecord[]> {
    return (await db.query<HostRow>('SELECT * FROM hosts ORDER BY id')).map(toHost);
  }

  async function removeHost(id: string): Promise<boolean> {
    return (await db.query('DELETE FROM hosts WHERE id = $1 RETURNING id', [id])).length > 0;
  }

  async function markHosts(now: number, limits: { suspectAfterMs: number; deadAfterMs: number }): Promise<HostStateChange[]> {
    if (!(limits.deadAfterMs >= limits.suspectAfterMs)) {
      throw new ShoalError('invalid', 'deadAfterMs must be at least suspectAfterMs', { field: 'deadAfterMs' });
    }
    return db.transaction(async (tx) => {
      const rows = await tx.query<HostRow>(`SELECT * FROM hosts WHERE state <> 'dead' ORDER BY id${forUpdate}`);
      const changes: HostStateChange[] = [];
      for (const row of rows) {
        const from = row.state as HostState;
        const silentFor = now - Number(row.last_seen);
        const to: HostState = silentFor > limits.deadAfterMs ? 'dead' : silentFor > limits.suspectAfterMs ? 'suspect' : from;
        if (to === from) continue;
        const updated = await one<HostRow>(tx, 'UPDATE hosts SET state = $2 WHERE id = $1 RETURNING *', [row.id, to]);
        if (updated) changes.push({ host: toHost(updated), from });
      }
      return changes;
    });
  }

  // ---- deployments ----------------------------------------------------------

  async function claimDeployment(claim: DeploymentClaim): Promise<ClaimResult> {
    const { service, version, providerId, now, leaseMs } = claim;
    const mode = claim.mode ?? 'cold';
    return db.transaction(async (tx) => {
      let tookOver: DeploymentRecord | undefined;
      const inFlight = await one<DeploymentRow>(tx, `SELECT * FROM deployments WHERE service = $1 AND state IN ${IN_FLIGHT_SQL}`, [service]);
      if (inFlight !== undefined) {
        const lease = inFlight.lease_until === null ? undefined : Number(inFlight.lease_until);
        if (lease === undefined || lease > now) return { claimed: false, existing: toDeployment(inFlight) };
        // The claimant stopped renewing (died mid-deploy): retire its claim. The state and
        // lease in the WHERE make this a compare-and-set if two providers try at once.
        const retired = await one<DeploymentRow>(
          tx,
          `UPDATE deployments SET state = 'failed', updated_at = $3,
             error = 'claim by ' || COALESCE(claimed_by, '?') || ' expired before the deployment finished'
           WHERE id = $1 AND state IN ${IN_FLIGHT_SQL} AND lease_until = $2 RETURNING *`,
          [inFlight.id, lease, now],
        );
        tookOver = retired && toDeployment(retired);
      }
      if (mode === 'cold') {
        const ready = await one<DeploymentRow>(
          tx,
          `SELECT * FROM deployments WHERE service = $1 AND state = 'ready' ORDER BY updated_at DESC, id LIMIT 1`,
          [service],
        );
        if (ready !== undefined) return { claimed: false, existing: toDeployment(ready) };
      }
      // On PostgreSQL a concurrent claimant's uncommitted row makes this wait, then do nothing.
      const inserted = await one<DeploymentRow>(
        tx,
        `INSERT INTO deployments (id, service, version, host_id, state, claimed_by, lease_until, created_at, updated_at)
         VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $7)
         ON CONFLICT DO NOTHING RETURNING *`,
        [randomUUID(), service, version, claim.hostId ?? null, providerId, now + leaseMs, now],
      );
      if (inserted !== undefined) {
        const deployment = toDeployment(inserted);
        return tookOver ? { claimed: true, deployment, tookOver } : { claimed: true, deployment };
      }
      const winner =
        (await one<DeploymentRow>(tx, `SELECT * FROM deployments WHERE service = $1 AND state IN ${IN_FLIGHT_SQL}`, [service])) ??
        // The winner already finished (ready or failed) between our INSERT and this read.
        (await one<DeploymentRow>(tx, 'SELECT * FROM deployments WHERE service = $1 ORDER BY updated_at DESC, id LIMIT 1', [service]));
      return { claimed: false, existing: toDeployment(must(winner, 'claim winner')) };
    });
  }

  async function renewClaim(id: string, providerId: string, now: number, leaseMs: number): Promise<boolean> {
    const rows = await db.query(
      `UPDATE deployments SET lease_until = $3, updated_at = $4
       WHERE id = $1 AND claimed_by = $2 AND state IN ${IN_FLIGHT_SQL} RETURNING id`,
      [id, providerId, now + leaseMs, now],
    );
    return rows.length > 0;
  }

  async function createDeployment(d: NewDeployment): Promise<DeploymentRecord> {
    checkState(d.state, 'state');
    const now = d.now ?? Date.now();
    try {
      const row = await one<DeploymentRow>(
        db,
        `INSERT INTO deployments (id, service, version, host_id, state, instance_id, endpoint, timeline, error,
                                  claimed_by, lease_until, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) RETURNING *`,
        [
          d.id ?? randomUUID(),
          d.service,
          d.version,
          d.hostId ?? null,
          d.state,
          d.instanceId ?? null,
          jsonOrNull(d.endpoint),
          jsonOrNull(d.timeline),
          d.error ?? null,
          d.claimedBy ?? null,
          d.leaseUntil ?? null,
          now,
        ],
      );
      return toDeployment(must(row, 'deployments insert'));
    } catch (e) {
      if (!isUniqueViolation(e)) throw e;
      const what = `${d.id === undefined ? 'the new deployment' : `deployment ${d.id}`} of ${d.service}`;
      throw new ShoalError('conflict', `${what}: the id is taken, or ${d.service} already has a deployment in flight`, {
        field: d.id === undefined ? 'state' : 'id',
        cause: e,
      });
    }
  }

  async function getDeployment(id: string): Promise<DeploymentRecord | undefined> {
    const row = await one<DeploymentRow>(db, 'SELECT * FROM deployments WHERE id = $1', [id]);
    return row && toDeployment(row);
  }

  async function updateDeployment(id: string, patch: DeploymentPatch): Promise<DeploymentRecord> {
    const sets: string[] = [];
    const params: SqlValue[] = [id];
    const set = (column: string, value: SqlValue) => {
      params.push(value);
      sets.push(`${column} = $${params.length}`);
    };
    if (patch.state !== undefined) set('state', checkState(patch.state, 'state'));
    if (patch.hostId !== undefined) set('host_id', patch.hostId);
    if (patch.instanceId !== undefined) set('instance_id', patch.instanceId);
    if (patch.endpoint !== undefined) set('endpoint', jsonOrNull(patch.endpoint));
    if (patch.timeline !== undefined) set('timeline', jsonOrNull(patch.timeline));
    if (patch.error !== undefined) set('error', patch.error);
    if (patch.claimedBy !== undefined) set('claimed_by', patch.claimedBy);
    if (patch.leaseUntil !== undefined) set('lease_until', patch.leaseUntil);
    if (patch.pausedAt !== undefined) set('paused_at', patch.pausedAt);
    set('updated_at', patch.now ?? Date.now());
    let where = 'id = $1';
    const ifState = patch.ifState === undefined ? undefined : typeof patch.ifState === 'string' ? [patch.ifState] : patch.ifState;
    if (ifState !== undefined) {
      const marks = ifState.map((st) => {
        params.push(checkState(st, 'ifState'));
        return `$${params.length}`;
      });
      where += marks.length === 0 ? ' AND 1 = 0' : ` AND state IN (${marks.join(', ')})`;
    }
    let row: DeploymentRow | undefined;
    try {
      row = await one<DeploymentRow>(db, `UPDATE deployments SET ${sets.join(', ')} WHERE ${where} RETURNING *`, params);
    } catch (e) {
      if (!isUniqueViolation(e)) throw e;
      throw new ShoalError('conflict', `deployment ${id}: the service already has another deployment in flight`, { field: 'state', cause: e });
    }
    if (row !== undefined) return toDeployment(row);
    const current = await getDeployment(id);
    if (current === undefined) throw new ShoalError('not-found', `no deployment ${id}`, { field: 'id' });
    throw new ShoalError('conflict', `deployment ${id} is ${current.state}, not ${ifState?.join(' or ')}`, { field: 'state' });
  }

  async function listDeployments(filter: DeploymentFilter = {}): Promise<DeploymentRecord[]> {
    const w = new Where();
    if (filter.service !== undefined) w.eq('service', filter.service);
    if (filter.hostId !== undefined) w.eq('host_id', filter.hostId);
    if (filter.state !== undefined) {
      const states = typeof filter.state === 'string' ? [filter.state] : filter.state;
      w.in('state', states.map((s) => checkState(s, 'state')));
    }
    const rows = await db.query<DeploymentRow>(`SELECT * FROM deployments${w.sql()} ORDER BY created_at, id`, w.params);
    return rows.map(toDeployment);
  }

  // ---- events ---------------------------------------------------------------

  async function appendEvent(e: NewEvent): Promise<EventRecord> {
    const row = await one<EventRow>(
      db,
      `INSERT INTO events (at, kind, service, host_id, instance_id, detail) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *`,
      [e.at ?? Date.now(), e.kind, e.service ?? null, e.hostId ?? null, e.instanceId ?? null, jsonOrNull(e.detail)],
    );
    return toEvent(must(row, 'events insert'));
  }

  async function listEvents(filter: EventFilter = {}): Promise<EventRecord[]> {
    const limit = Math.max(1, Math.min(10_000, Math.floor(filter.limit ?? 100)));
    const w = new Where();
    if (filter.service !== undefined) w.eq('service', filter.service);
    if (filter.hostId !== undefined) w.eq('host_id', filter.hostId);
    if (filter.kind !== undefined) w.eq('kind', filter.kind);
    if (filter.afterId !== undefined) {
      w.gt('id', filter.afterId);
      return (await db.query<EventRow>(`SELECT * FROM events${w.sql()} ORDER BY id LIMIT ${limit}`, w.params)).map(toEvent);
    }
    const rows = await db.query<EventRow>(`SELECT * FROM events${w.sql()} ORDER BY id DESC LIMIT ${limit}`, w.params);
    return rows.reverse().map(toEvent);
  }

  // ---- misc -----------------------------------------------------------------

  async function info(): Promise<RegistryInfo> {
    const v = await one<{ v: number | string | null }>(db, 'SELECT MAX(version) AS v FROM schema_migrations', []);
    const base: RegistryInfo = { dialect: db.dialect, location: options.location, schemaVersion: Number(v?.v ?? 0) };
    if (db.dialect !== 'sqlite') return base;
    const jm = await one<{ journal_mode: string }>(db, 'PRAGMA journal_mode', []);
    const sy = await one<{ synchronous: number }>(db, 'PRAGMA synchronous', []);
    return { ...base, ...(jm ? { journalMode: jm.journal_mode } : {}), ...(sy ? { synchronous: Number(sy.synchronous) } : {}) };
  }

  return {
    dialect: db.dialect,
    info,
    putService,
    getService,
    listServices,
    listServiceVersions,
    removeService,
    upsertHost,
    getHost,
    recordHostReport,
    recordHostReports,
    listHosts,
    removeHost,
    markHosts,
    claimDeployment,
    renewClaim,
    createDeployment,
    getDeployment,
    updateDeployment,
    listDeployments,
    appendEvent,
    listEvents,
    ...createAccessQueries(db),
    ...createLiveStateQueries(db),
    close: () => db.close(),
  };
}

export const LATEST_SCHEMA_VERSION = Math.max(...MIGRATIONS.map((m) => m.version));

// ---- rows → records ---------------------------------------------------------

interface ServiceRow extends Row {
  name: string;
  version: string;
  description: string;
  is_current: number | string;
  created_at: number | string;
  updated_at: number | string;
}

interface HostRow extends Row {
  id: string;
  control_url: string;
  data_url: string;
  labels: string;
  capabilities: string;
  control_token: string | null;
  last_report: string | null;
  last_seen: number | string;
  state: string;
  registered_at: number | string;
}

interface DeploymentRow extends Row {
  id: string;
  service: string;
  version: string;
  host_id: string | null;
  state: string;
  instance_id: string | null;
  endpoint: string | null;
  timeline: string | null;
  error: string | null;
  claimed_by: string | null;
  lease_until: number | string | null;
  paused_at?: number | string | null;
  created_at: number | string;
  updated_at: number | string;
}

interface EventRow extends Row {
  id: number | string;
  at: number | string;
  kind: string;
  service: string | null;
  host_id: string | null;
  instance_id: string | null;
  detail: string | null;
}

// PostgreSQL hands BIGINT back as a string; SQLite as a number. Number() reads both.
function toService(r: ServiceRow): ServiceRecord {
  return {
    name: r.name,
    version: r.version,
    description: JSON.parse(r.description) as ServiceDescription,
    current: Number(r.is_current) === 1,
    createdAt: Number(r.created_at),
    updatedAt: Number(r.updated_at),
  };
}

function toHost(r: HostRow): HostRecord {
  return {
    id: r.id,
    controlUrl: r.control_url,
    dataUrl: r.data_url,
    labels: JSON.parse(r.labels) as Record<string, string>,
    capabilities: JSON.parse(r.capabilities) as Record<string, unknown>,
    controlToken: r.control_token ?? undefined,
    lastReport: r.last_report === null ? undefined : (JSON.parse(r.last_report) as HostReport),
    lastSeen: Number(r.last_seen),
    state: r.state as HostState,
    registeredAt: Number(r.registered_at),
  };
}

function toDeployment(r: DeploymentRow): DeploymentRecord {
  return {
    id: r.id,
    service: r.service,
    version: r.version,
    hostId: r.host_id ?? undefined,
    state: r.state as DeploymentState,
    instanceId: r.instance_id ?? undefined,
    endpoint: r.endpoint === null ? undefined : JSON.parse(r.endpoint),
    timeline: r.timeline === null ? undefined : JSON.parse(r.timeline),
    error: r.error ?? undefined,
    claimedBy: r.claimed_by ?? undefined,
    leaseUntil: r.lease_until === null ? undefined : Number(r.lease_until),
    pausedAt: r.paused_at === null || r.paused_at === undefined ? undefined : Number(r.paused_at),
    createdAt: Number(r.created_at),
    updatedAt: Number(r.updated_at),
  };
}

function toEvent(r: EventRow): EventRecord {
  return {
    id: Number(r.id),
    at: Number(r.at),
    kind: r.kind,
    service: r.service ?? undefined,
    hostId: r.host_id ?? undefined,
    instanceId: r.instance_id ?? undefined,
    detail: r.detail === null ? undefined : JSON.parse(r.detail),
  };
}

// ---- helpers ----------------------------------------------------------------

class Where {
  readonly params: SqlValue[] = [];
  private readonly parts: string[] = [];
  private bind(v: SqlValue): string {
    this.params.push(v);
    return `$${this.params.length}`;
  }
  eq(column: string, v: SqlValue): void {
    this.parts.push(`${column} = ${this.bind(v)}`);
  }
  gt(column: string, v: SqlValue): void {
    this.parts.push(`${column} > ${this.bind(v)}`);
  }
  in(column: string, vs: readonly SqlValue[]): void {
    this.parts.push(vs.length === 0 ? '1 = 0' : `${column} IN (${vs.map((v) => this.bind(v)).join(', ')})`);
  }
  sql(): string {
    return this.parts.length === 0 ? '' : ` WHERE ${this.parts.join(' AND ')}`;
  }
}

function jsonOrNull(v: unknown): string | null {
  return v === undefined || v === null ? null : JSON.stringify(v);
}

function checkState(s: string, field: string): DeploymentState {
  if (!DEPLOYMENT_STATES.has(s)) throw new ShoalError('invalid', `unknown deployment state ${JSON.stringify(s)}`, { field });
  return s as DeploymentState;
}

function must<T>(v: T | undefined, what: string): T {
  if (v === undefined) throw new ShoalError('internal', `${what} returned no row`);
  return v;
}

export { IN_FLIGHT_STATES };
