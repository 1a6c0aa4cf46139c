// The one thing the registry's queries need from a database: run a statement with
// numbered parameters and get rows back, run DDL, and run a function in a transaction.
// SQL is written once in the PostgreSQL spelling ($1, $2 …) and the SQLite driver
// rewrites the placeholders (?1, ?2 …), which bind the same way.

/** A value a statement can bind: JSON goes in as text, times as epoch-ms integers. */
export type SqlValue = string | number | bigint | null;

export type Row = Record<string, unknown>;

export type Dialect = 'sqlite' | 'postgres';

/** What a transaction body (and the registry's queries) runs statements on. */
export interface SqlExecutor {
  readonly dialect: Dialect;
  query<R extends Row = Row>(sql: string, params?: readonly SqlValue[]): Promise<R[]>;
  /** One or more statements without parameters (migrations). */
  exec(sql: string): Promise<void>;
}

export interface SqlDriver extends SqlExecutor {
  /**
   * Runs `fn` in one transaction: committed if it resolves, rolled back if it throws.
   * SQLite takes the write lock at BEGIN (BEGIN IMMEDIATE), so transactions on one file
   * run one at a time; PostgreSQL runs READ COMMITTED and callers lock what they need.
   */
  transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** `$1` → `?1`. Our SQL has no `$` inside string literals, so a plain rewrite is enough. */
export function toSqlitePlaceholders(sql: string): string {
  return sql.replace(/\$(\d+)/g, '?$1');
}

/** A UNIQUE or PRIMARY KEY violation, from either database. */
export function isUniqueViolation(e: unknown): boolean {
  const x = e as { code?: unknown; errcode?: unknown };
  // PostgreSQL SQLSTATE 23505; SQLite SQLITE_CONSTRAINT_UNIQUE (2067) / _PRIMARYKEY (1555).
  return x.code === '23505' || x.errcode === 2067 || x.errcode === 1555;
}
