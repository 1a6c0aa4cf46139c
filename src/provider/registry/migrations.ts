// Numbered schema migrations, applied in order on open, all in one transaction, each
// recorded in schema_migrations. A migration never changes once released: add a new one.
//
// Both dialects run the same SQL except where a placeholder below differs. Times are
// epoch milliseconds (BIGINT), JSON is TEXT (parsed by the registry), so rows read the
// same from either database.
import { ShoalError } from '../../protocol/index.ts';
import type { Dialect, SqlDriver } from './sql-driver.ts';

export interface Migration {
  version: number;
  name: string;
  sql: (dialect: Dialect) => string;
}

const serialKey = (d: Dialect) => (d === 'postgres' ? 'BIGSERIAL PRIMARY KEY' : 'INTEGER PRIMARY KEY AUTOINCREMENT');

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'services, hosts, deployments, events',
    sql: (d) => `
      CREATE TABLE services (
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        description TEXT NOT NULL,
        is_current INTEGER NOT NULL DEFAULT 0,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (name, version)
      );
      -- at most one current version per service name
      CREATE UNIQUE INDEX services_current ON services (name) WHERE is_current = 1;

      CREATE TABLE hosts (
        id TEXT PRIMARY KEY,
        control_url TEXT NOT NULL,
        data_url TEXT NOT NULL,
        labels TEXT NOT NULL,
        capabilities TEXT NOT NULL,
        last_report TEXT,
        last_seen BIGINT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('alive', 'suspect', 'dead')),
        registered_at BIGINT NOT NULL
      );

      CREATE TABLE deployments (
        id TEXT PRIMARY KEY,
        service TEXT NOT NULL,
        version TEXT NOT NULL,
        host_id TEXT,
        state TEXT NOT NULL CHECK (state IN ('pending', 'deploying', 'ready', 'failed', 'stopped')),
        instance_id TEXT,
        endpoint TEXT,
        timeline TEXT,
        error TEXT,
        claimed_by TEXT,
        lease_until BIGINT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      );
      -- The cold-start coordination: one deployment in flight per service, whichever
      -- provider (and connection) tries; the loser's INSERT … ON CONFLICT does nothing.
      CREATE UNIQUE INDEX deployments_one_in_flight ON deployments (service) WHERE state IN ('pending', 'deploying');
      CREATE INDEX deployments_service_state ON deployments (service, state);
      CREATE INDEX deployments_host ON deployments (host_id);

      CREATE TABLE events (
        id ${serialKey(d)},
        at BIGINT NOT NULL,
        kind TEXT NOT NULL,
        service TEXT,
        host_id TEXT,
        instance_id TEXT,
        detail TEXT
      );
      CREATE INDEX events_service ON events (service, id);
    `,
  },
  {
    version: 2,
    name: 'hosts.control_token: the host token gets its own column, out of capabilities',
    // Version 1 kept the token inside the capabilities JSON; move it out, and drop the key.
    sql: (d) =>
      d === 'postgres'
        ? `
      ALTER TABLE hosts ADD COLUMN control_token TEXT;
      UPDATE hosts SET control_token = capabilities::jsonb ->> 'controlToken',
                       capabilities = (capabilities::jsonb - 'controlToken')::text;
    `
        : `
      ALTER TABLE hosts ADD COLUMN control_token TEXT;
      UPDATE hosts SET control_token = json_extract(capabilities, '$.controlToken'),
                       capabilities = json_remove(capabilities, '$.controlToken');
    `,
  },
  {
    version: 3,
    name: 'api_tokens and audit: who may call the APIs, and what they did',
    // Tokens are stored as SHA-256 of the secret only (src/provider/auth/token.ts says why
    // a plain hash is enough). services is a JSON array (invoke tokens' scope) or NULL.
    sql: (d) => `
      CREATE TABLE api_tokens (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('admin', 'deploy', 'read', 'invoke')),
        services TEXT,
        note TEXT,
        created_at BIGINT NOT NULL,
        expires_at BIGINT,
        revoked_at BIGINT
      );

      CREATE TABLE audit (
        id ${serialKey(d)},
        at BIGINT NOT NULL,
        token_id TEXT,
        role TEXT,
        method TEXT NOT NULL,
        route TEXT NOT NULL,
        path TEXT NOT NULL,
        service TEXT,
        address TEXT,
        status INTEGER NOT NULL
      );
      CREATE INDEX audit_at ON audit (at);
      CREATE INDEX audit_service ON audit (service, at);
    `,
  },
  {
    version: 4,
    name: 'live state: saved states, paused deployments, traffic seen by every provider',
    // saved_states: captured instance states (OCI artifacts in the store, by digest) that a
    // deployment may start from: snapshots, suspended instances, farm snapshots. A state is
    // kept until expires_at (NULL: until removed). instance_traffic: each provider's last
    // message time per instance, so idleness is judged from what every provider sees.
    sql: () => `
      ALTER TABLE deployments ADD COLUMN paused_at BIGINT;

      CREATE TABLE saved_states (
        id TEXT PRIMARY KEY,
        service TEXT NOT NULL,
        version TEXT NOT NULL,
        digest TEXT NOT NULL,
        size BIGINT NOT NULL,
        driver TEXT NOT NULL,
        source_instance TEXT,
        source_host TEXT,
        reason TEXT NOT NULL CHECK (reason IN ('snapshot', 'suspend', 'farm', 'schedule')),
        label TEXT,
        created_at BIGINT NOT NULL,
        expires_at BIGINT
      );
      CREATE INDEX saved_states_service ON saved_states (service, created_at);

      CREATE TABLE instance_traffic (
        instance_id TEXT NOT NULL,
        provider_id TEXT NOT NULL,
        last_message_at BIGINT NOT NULL,
        messages BIGINT NOT NULL,
        PRIMARY KEY (instance_id, provider_id)
      );
    `,
  },
];

/** Any constant works; it only has to be the same in every provider sharing a database. */
const MIGRATION_LOCK_KEY = 0x73686f616c; // "shoal"

export interface MigrationOutcome {
  /** Versions applied by this call (empty when the schema was already current). */
  applied: number[];
  version: number;
}

/**
 * Brings the schema up to date. Safe when several providers open one PostgreSQL at the
 * same moment: a transaction-scoped advisory lock lets one migrate while the others
 * wait, then find nothing to do. On SQLite, BEGIN IMMEDIATE gives the same exclusion.
 */
export async function migrate(driver: SqlDriver, now: number, migrations: readonly Migration[] = MIGRATIONS): Promise<MigrationOutcome> {
  const latest = migrations.reduce((m, x) => Math.max(m, x.version), 0);
  return driver.transaction(async (tx) => {
    if (tx.dialect === 'postgres') await tx.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK_KEY]);
    await tx.exec(
      'CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)',
    );
    const rows = await tx.query<{ version: number | string }>('SELECT version FROM schema_migrations');
    const done = new Set(rows.map((r) => Number(r.version)));
    const newest = Math.max(0, ...done);
    if (newest > latest) {
      throw new ShoalError(
        'unsupported',
        `the registry database has schema version ${newest}, newer than this Shoal knows (${latest}); upgrade Shoal`,
      );
    }
    const applied: number[] = [];
    for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
      if (done.has(m.version)) continue;
      await tx.exec(m.sql(tx.dialect));
      await tx.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [m.version, m.name, now]);
      applied.push(m.version);
    }
    return { applied, version: latest };
  });
}
