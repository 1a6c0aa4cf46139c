// The provider's registry: services (with versions), hosts, deployments and events, in
// SQLite by default or PostgreSQL when given a postgres:// URL.
//
// Why plain SQL and not a query builder: the registry has about twenty statements, all
// simple, and they are the same text on both databases (numbered placeholders, ON
// CONFLICT, RETURNING, partial unique indexes all exist in both). SQLite comes from
// Node's built-in node:sqlite, so there is no native addon to build; Kysely, the obvious
// typed builder, has no node:sqlite dialect of its own (a third-party package or our own
// adapter would be needed) and its types would cover queries we can read at a glance.
// So: SQL written once with $1, $2 … (the SQLite driver rewrites them to ?1, ?2 …), a
// four-method driver interface (query, exec, transaction, close) with two small
// implementations, numbered migrations, and row → record mappers that give typed objects.
import { fileURLToPath } from 'node:url';
import { migrate } from './migrations.ts';
import { createPostgresDriver } from './postgres-driver.ts';
import { createRegistryOn } from './registry.ts';
import { openSqliteDriver } from './sqlite-driver.ts';
import type { SqlDriver } from './sql-driver.ts';
import type { Registry } from './types.ts';

export type * from './types.ts';
export { IN_FLIGHT_STATES } from './types.ts';
export type { Dialect } from './sql-driver.ts';

export const DEFAULT_SQLITE_PATH = './.shoal/shoal.db';

export interface OpenRegistryOptions {
  /**
   * postgres://… or postgresql://… → PostgreSQL. Anything else is a SQLite file: a path,
   * `file:PATH`, `file:///abs/path` or `sqlite:PATH`. Unset → `sqlitePath`.
   */
  url?: string;
  /** Default ./.shoal/shoal.db; missing directories are created. */
  sqlitePath?: string;
  /** SQLite: how long to wait for another connection's write lock (default 10 s). */
  busyTimeoutMs?: number;
  /** PostgreSQL: pool size (default 10). */
  maxConnections?: number;
}

/** Opens (creating if needed) the registry and brings its schema up to date. */
export async function openRegistry(options: OpenRegistryOptions = {}): Promise<Registry> {
  const url = options.url?.trim();
  let driver: SqlDriver;
  let location: string;
  if (url !== undefined && /^postgres(ql)?:\/\//i.test(url)) {
    driver = createPostgresDriver({ url, ...(options.maxConnections === undefined ? {} : { maxConnections: options.maxConnections }) });
    location = withoutPassword(url);
  } else {
    location = url ? sqlitePathOf(url) : (options.sqlitePath ?? DEFAULT_SQLITE_PATH);
    driver = await openSqliteDriver({ path: location, ...(options.busyTimeoutMs === undefined ? {} : { busyTimeoutMs: options.busyTimeoutMs }) });
  }
  try {
    await migrate(driver, Date.now());
  } catch (e) {
    await driver.close().catch(() => undefined);
    throw e;
  }
  return createRegistryOn({ driver, location });
}

function sqlitePathOf(url: string): string {
  if (url.startsWith('file://')) return fileURLToPath(url);
  if (url.startsWith('file:')) return url.slice('file:'.length);
  if (url.startsWith('sqlite:')) return url.slice('sqlite:'.length);
  return url;
}

function withoutPassword(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return 'postgres://(unparsable URL)';
  }
}
