// PostgreSQL through `pg` (pure JavaScript client): a pool per registry; a transaction
// holds one pooled connection from BEGIN to COMMIT.
import pg from 'pg';
import { ShoalError } from '../../protocol/index.ts';
import type { Row, SqlDriver, SqlExecutor, SqlValue } from './sql-driver.ts';

export interface PostgresDriverOptions {
  /** postgres://user:password@host:port/database */
  url: string;
  /** Pool size (default 10). */
  maxConnections?: number;
}

export function createPostgresDriver(options: PostgresDriverOptions): SqlDriver {
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.maxConnections ?? 10,
    connectionTimeoutMillis: 10_000,
  });
  // An idle pooled connection that the server drops (restart, admin kill) emits 'error';
  // unhandled, that would crash the provider. The pool replaces the connection itself.
  pool.on('error', () => undefined);
  let closed = false;

  const onClient = (client: pg.PoolClient | pg.Pool): SqlExecutor => ({
    dialect: 'postgres',
    query: async <R extends Row>(sql: string, params: readonly SqlValue[] = []) => {
      const res = await client.query(sql, params as SqlValue[]);
      return res.rows as R[];
    },
    exec: async (sql: string) => {
      await client.query(sql);
    },
  });
  const direct = onClient(pool);

  return {
    dialect: 'postgres',
    query: (sql, params) => (closed ? Promise.reject(closedError()) : direct.query(sql, params)),
    exec: (sql) => (closed ? Promise.reject(closedError()) : direct.exec(sql)),
    transaction: async <T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T> => {
      if (closed) throw closedError();
      const client = await pool.connect();
      let broken = false;
      try {
        await client.query('BEGIN');
        const result = await fn(onClient(client));
        await client.query('COMMIT');
        return result;
      } catch (e) {
        try {
          await client.query('ROLLBACK');
        } catch {
          broken = true; // the connection is unusable: do not return it to the pool
        }
        throw e;
      } finally {
        client.release(broken);
      }
    },
    close: async () => {
      if (closed) return;
      closed = true;
      await pool.end();
    },
  };
}

function closedError(): ShoalError {
  return new ShoalError('unavailable', 'registry is closed');
}
