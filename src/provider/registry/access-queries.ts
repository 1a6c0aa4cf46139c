// The registry's API tokens and audit trail (migration 3): same SQL on both databases.
import { ShoalError } from '../../protocol/index.ts';
import type { ApiRole } from '../../protocol/index.ts';
import { isUniqueViolation, type Row, type SqlExecutor, type SqlValue } from './sql-driver.ts';
import type { ApiTokenRecord, AuditFilter, AuditRecord, NewApiToken, NewAuditEntry, Registry } from './types.ts';

type AccessQueries = Pick<Registry, 'createApiToken' | 'getApiToken' | 'listApiTokens' | 'revokeApiToken' | 'appendAudit' | 'listAudit'>;

export function createAccessQueries(db: SqlExecutor): AccessQueries {
  return {
    async createApiToken(t: NewApiToken) {
      try {
        const rows = await db.query<TokenRow>(
          `INSERT INTO api_tokens (id, hash, role, services, note, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *`,
          [t.id, t.hash, t.role, t.services === undefined ? null : JSON.stringify(t.services), t.note ?? null, t.createdAt, t.expiresAt ?? null],
        );
        return toToken(rows[0]!);
      } catch (e) {
        if (isUniqueViolation(e)) throw new ShoalError('conflict', `a token with id ${t.id} exists`, { field: 'id' });
        throw e;
      }
    },
    async getApiToken(id) {
      const rows = await db.query<TokenRow>('SELECT * FROM api_tokens WHERE id = $1', [id]);
      return rows[0] && toToken(rows[0]);
    },
    async listApiTokens() {
      return (await db.query<TokenRow>('SELECT * FROM api_tokens ORDER BY created_at, id')).map(toToken);
    },
    async revokeApiToken(id, now) {
      const rows = await db.query<{ id: string }>('UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL RETURNING id', [id, now]);
      return rows.length > 0;
    },
    async appendAudit(e: NewAuditEntry) {
      const rows = await db.query<AuditRow>(
        `INSERT INTO audit (at, token_id, role, method, route, path, service, address, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *`,
        [e.at, e.tokenId ?? null, e.role ?? null, e.method, e.route, e.path, e.service ?? null, e.address ?? null, e.status],
      );
      return toAudit(rows[0]!);
    },
    async listAudit(filter: AuditFilter = {}) {
      const limit = Math.max(1, Math.min(10_000, Math.floor(filter.limit ?? 100)));
      const params: SqlValue[] = [];
      const parts: string[] = [];
      const add = (sql: string, v: SqlValue) => {
        params.push(v);
        parts.push(sql.replace('?', `$${params.length}`));
      };
      if (filter.service !== undefined) add('service = ?', filter.service);
      if (filter.tokenId !== undefined) add('token_id = ?', filter.tokenId);
      if (filter.since !== undefined) add('at >= ?', filter.since);
      if (filter.until !== undefined) add('at < ?', filter.until);
      const where = parts.length === 0 ? '' : ` WHERE ${parts.join(' AND ')}`;
      const rows = await db.query<AuditRow>(`SELECT * FROM audit${where} ORDER BY id DESC LIMIT ${limit}`, params);
      return rows.reverse().map(toAudit);
    },
  };
}

interface TokenRow extends Row {
  id: string;
  hash: string;
  role: string;
  services: string | null;
  note: string | null;
  created_at: number | string;
  expires_at: number | string | null;
  revoked_at: number | string | null;
}

interface AuditRow extends Row {
  id: number | string;
  at: number | string;
  token_id: string | null;
  role: string | null;
  method: string;
  route: string;
  path: string;
  service: string | null;
  address: string | null;
  status: number | string;
}

function toToken(r: TokenRow): ApiTokenRecord {
  return {
    id: r.id,
    hash: r.hash,
    role: r.role as ApiRole,
    services: r.services === null ? undefined : (JSON.parse(r.services) as string[]),
    note: r.note ?? undefined,
    createdAt: Number(r.created_at),
    expiresAt: r.expires_at === null ? undefined : Number(r.expires_at),
    revokedAt: r.revoked_at === null ? undefined : Number(r.revoked_at),
  };
}

function toAudit(r: AuditRow): AuditRecord {
  return {
    id: Number(r.id),
    at: Number(r.at),
    ...(r.token_id === null ? {} : { tokenId: r.token_id }),
    ...(r.role === null ? {} : { role: r.role }),
    method: r.method,
    route: r.route,
    path: r.path,
    ...(r.service === null ? {} : { service: r.service }),
    ...(r.address === null ? {} : { address: r.address }),
    status: Number(r.status),
  };
}
