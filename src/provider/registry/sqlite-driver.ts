// SQLite through Node's built-in node:sqlite (no native addon to build or ship).
//
// Durability: WAL journal with synchronous=FULL, so a commit returns only after the WAL
// is on disk; an acknowledged write survives kill -9 and a power cut.
//
// Waiting: node:sqlite is synchronous, so SQLite's own busy_timeout would block the
// whole event loop while another connection holds the write lock, and if that other
// connection lives in this same process (two registries on one file) it could never
// finish: a deadlock until the timeout. So busy_timeout is 0 and a statement or BEGIN
// that finds the database locked is retried asynchronously with backoff, up to
// `busyTimeoutMs`. Statements on one connection are serialised (a transaction holds the
// connection until it ends), because node:sqlite has one connection per DatabaseSync.
import { chmodSync, closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { ShoalError } from '../../protocol/index.ts';
import { toSqlitePlaceholders, type Row, type SqlDriver, type SqlExecutor, type SqlValue } from './sql-driver.ts';

export interface SqliteDriverOptions {
  /** A file path, or ':memory:'. Missing parent directories are created. */
  path: string;
  /** How long to keep retrying while another connection holds the write lock (default 10 s). */
  busyTimeoutMs?: number;
}

const SQLITE_BUSY = 5;
const SQLITE_LOCKED = 6;

/**
 * The registry holds host and route tokens: the file is 0600 before SQLite opens it (SQLite
 * gives -wal and -shm its mode), a directory made for it 0700, and an older install's
 * files are narrowed too.
 */
function ownerOnly(file: string): void {
  mkdirSync(path.dirname(path.resolve(file)), { recursive: true, mode: 0o700 });
  closeSync(openSync(file, 'a', 0o600));
  for (const f of [file, `${file}-wal`, `${file}-shm`]) if (existsSync(f)) chmodSync(f, 0o600);
}

export async function openSqliteDriver(options: SqliteDriverOptions): Promise<SqlDriver> {
  const file = options.path;
  if (file !== ':memory:') ownerOnly(file);
  const db = new DatabaseSync(file);
  const busyTimeoutMs = options.busyTimeoutMs ?? 10_000;
  const retryBusy = <T>(what: string, fn: () => T) => retryWhileBusy(file, busyTimeoutMs, what, fn);
  try {
    db.exec('PRAGMA busy_timeout = 0');
    if (file !== ':memory:') {
      // Switching a new file to WAL takes an exclusive lock: another opener may hold it.
      const mode = (await retryBusy('PRAGMA journal_mode', () => db.prepare('PRAGMA journal_mode = WAL').get())) as
        | { journal_mode: string }
        | undefined;
      if (mode?.journal_mode !== 'wal') {
        throw new ShoalError('unsupported', `SQLite at ${file} refused WAL mode (journal_mode=${mode?.journal_mode})`);
      }
    }
    db.exec('PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON');
  } catch (e) {
    db.close();
    throw e;
  }

  const statements = new Map<string, StatementSync>();
  const prepare = (sql: string): StatementSync => {
    let st = statements.get(sql);
    if (st === undefined) {
      st = db.prepare(toSqlitePlaceholders(sql));
      statements.set(sql, st);
    }
    return st;
  };
  const run = <R extends Row>(sql: string, params: readonly SqlValue[]): R[] => prepare(sql).all(...params) as R[];

  // One holder of the connection at a time: a chain of promises.
  let tail: Promise<unknown> = Promise.resolve();
  let closed = false;
  function exclusive<T>(fn: () => Promise<T>): Promise<T> {
    if (closed) return Promise.reject(new ShoalError('unavailable', 'registry is closed'));
    const next = tail.then(fn, fn);
    tail = next.catch(() => undefined);
    return next;
  }

  const inTx: SqlExecutor = {
    dialect: 'sqlite',
    query: async <R extends Row>(sql: string, params: readonly SqlValue[] = []) => run<R>(sql, params),
    exec: async (sql: string) => {
      db.exec(sql);
    },
  };

  return {
    dialect: 'sqlite',
    query: <R extends Row>(sql: string, params: readonly SqlValue[] = []) =>
      exclusive(() => retryBusy(firstWord(sql), () => run<R>(sql, params))),
    exec: (sql: string) => exclusive(() => retryBusy('exec', () => db.exec(sql))),
    transaction: <T>(fn: (tx: SqlExecutor) => Promise<T>) =>
      exclusive(async () => {
        await retryBusy('BEGIN', () => db.exec('BEGIN IMMEDIATE'));
        let result: T;
        try {
          result = await fn(inTx);
        } catch (e) {
          if (db.isTransaction) db.exec('ROLLBACK');
          throw e;
        }
        try {
          db.exec('COMMIT');
        } catch (e) {
          if (db.isTransaction) db.exec('ROLLBACK');
          throw e;
        }
        return result;
      }),
    close: async () => {
      if (closed) return;
      await exclusive(async () => undefined);
      closed = true;
      statements.clear();
      db.close();
    },
  };
}

async function retryWhileBusy<T>(file: string, busyTimeoutMs: number, what: string, fn: () => T): Promise<T> {
  const deadline = Date.now() + busyTimeoutMs;
  for (let attempt = 0; ; attempt++) {
    try {
      return fn();
    } catch (e) {
      if (!isBusy(e)) throw e;
      if (Date.now() >= deadline) {
        throw new ShoalError('unavailable', `SQLite database ${file} stayed locked for ${busyTimeoutMs} ms (${what})`, { cause: e });
      }
      // 1, 2, 4 … 32 ms with jitter: short, since SQLite transactions here last well under a millisecond.
      await sleep(Math.min(32, 1 << Math.min(attempt, 5)) * (0.5 + Math.random()));
    }
  }
}

function isBusy(e: unknown): boolean {
  const code = (e as { errcode?: number }).errcode;
  // Extended codes carry the primary code in the low byte (SQLITE_BUSY_SNAPSHOT = 517 …).
  return typeof code === 'number' && ((code & 0xff) === SQLITE_BUSY || (code & 0xff) === SQLITE_LOCKED);
}

function firstWord(sql: string): string {
  return sql.trimStart().split(/\s/, 1)[0] ?? 'query';
}
