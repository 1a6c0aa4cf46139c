// The registry's live-state records (migration 4): saved states that deployments may start
// from, and the traffic every provider sees per instance. Same SQL on both databases.
import { randomUUID } from 'node:crypto';
import { ShoalError } from '../../protocol/index.ts';
import { isUniqueViolation, type Row, type SqlExecutor, type SqlValue } from './sql-driver.ts';
import type { NewSavedState, Registry, SavedStateReason, SavedStateRecord, TrafficReport } from './types.ts';

type LiveStateQueries = Pick<Registry, 'saveState' | 'getState' | 'listStates' | 'removeState' | 'expireStates' | 'recordTraffic' | 'lastTraffic' | 'forgetTraffic'>;

const REASONS: ReadonlySet<string> = new Set<SavedStateReason>(['snapshot', 'suspend', 'farm', 'schedule']);
/** Keeps one statement's parameter list well under both databases' limits. */
const BATCH = 500;

export function createLiveStateQueries(db: SqlExecutor): LiveStateQueries {
  return {
    async saveState(s: NewSavedState) {
      if (!REASONS.has(s.reason)) throw new ShoalError('invalid', `unknown state reason ${JSON.stringify(s.reason)}`, { field: 'reason' });
      try {
        const rows = await db.query<StateRow>(
          `INSERT INTO saved_states (id, service, version, digest, size, driver, source_instance, source_host, reason, label, created_at, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING *`,
          [s.id ?? randomUUID(), s.service, s.version, s.digest, s.size, s.driver, s.sourceInstance ?? null, s.sourceHost ?? null, s.reason, s.label ?? null, s.createdAt, s.expiresAt ?? null],
        );
        return toState(rows[0]!);
      } catch (e) {
        if (isUniqueViolation(e)) throw new ShoalError('conflict', `a saved state with id ${s.id} exists`, { field: 'id' });
        throw e;
      }
    },
    async getState(id) {
      const rows = await db.query<StateRow>('SELECT * FROM saved_states WHERE id = $1', [id]);
      return rows[0] && toState(rows[0]);
    },
    async listStates(filter = {}) {
      const params: SqlValue[] = [];
      const parts: string[] = [];
      const add = (sql: string, v: SqlValue) => {
        params.push(v);
        parts.push(sql.replace('?', `$${params.length}`));
      };
      if (filter.service !== undefined) add('service = ?', filter.service);
      if (filter.reason !== undefined) add('reason = ?', filter.reason);
      if (filter.label !== undefined) add('label = ?', filter.label);
      if (filter.liveAt !== undefined) add('(expires_at IS NULL OR expires_at > ?)', filter.liveAt);
      const where = parts.length === 0 ? '' : ` WHERE ${parts.join(' AND ')}`;
      return (await db.query<StateRow>(`SELECT * FROM saved_states${where} ORDER BY created_at DESC, id`, params)).map(toState);
    },
    async removeState(id) {
      return (await db.query<{ id: string }>('DELETE FROM saved_states WHERE id = $1 RETURNING id', [id])).length > 0;
    },
    async expireStates(now) {
      // DELETE … RETURNING: when several providers run this at once, each row comes back to one of them.
      return (await db.query<StateRow>('DELETE FROM saved_states WHERE expires_at IS NOT NULL AND expires_at <= $1 RETURNING *', [now])).map(toState);
    },
    async recordTraffic(providerId, reports: readonly TrafficReport[]) {
      for (let i = 0; i < reports.length; i += BATCH) {
        const batch = reports.slice(i, i + BATCH);
        const params: SqlValue[] = [providerId];
        const values = batch.map((r) => {
          params.push(r.instanceId, r.lastMessageAt, r.messages);
          const n = params.length;
          return `($${n - 2}, $1, $${n - 1}, $${n})`;
        });
        await db.query(
          `INSERT INTO instance_traffic (instance_id, provider_id, last_message_at, messages) VALUES ${values.join(', ')}
           ON CONFLICT (instance_id, provider_id) DO UPDATE SET
             last_message_at = CASE WHEN excluded.last_message_at > instance_traffic.last_message_at THEN excluded.last_message_at ELSE instance_traffic.last_message_at END,
             messages = instance_traffic.messages + excluded.messages`,
          params,
        );
      }
    },
    async lastTraffic(instanceIds) {
      const out = new Map<string, number>();
      for (let i = 0; i < instanceIds.length; i += BATCH) {
        const batch = instanceIds.slice(i, i + BATCH);
        if (batch.length === 0) continue;
        const marks = batch.map((_, j) => `$${j + 1}`).join(', ');
        const rows = await db.query<{ instance_id: string; last: number | string }>(
          `SELECT instance_id, MAX(last_message_at) AS last FROM instance_traffic WHERE instance_id IN (${marks}) GROUP BY instance_id`,
          batch,
        );
        for (const r of rows) out.set(r.instance_id, Number(r.last));
      }
      return out;
    },
    async forgetTraffic(instanceIds) {
      for (let i = 0; i < instanceIds.length; i += BATCH) {
        const batch = instanceIds.slice(i, i + BATCH);
        if (batch.length === 0) continue;
        await db.query(`DELETE FROM instance_traffic WHERE instance_id IN (${batch.map((_, j) => `$${j + 1}`).join(', ')})`, batch);
      }
    },
  };
}

interface StateRow extends Row {
  id: string;
  service: string;
  version: string;
  digest: string;
  size: number | string;
  driver: string;
  source_instance: string | null;
  source_host: string | null;
  reason: string;
  label: string | null;
  created_at: number | string;
  expires_at: number | string | null;
}

function toState(r: StateRow): SavedStateRecord {
  return {
    id: r.id,
    service: r.service,
    version: r.version,
    digest: r.digest,
    size: Number(r.size),
    driver: r.driver,
    sourceInstance: r.source_instance ?? undefined,
    sourceHost: r.source_host ?? undefined,
    reason: r.reason as SavedStateReason,
    label: r.label ?? undefined,
    createdAt: Number(r.created_at),
    expiresAt: r.expires_at === null ? undefined : Number(r.expires_at),
  };
}
