import Database from 'better-sqlite3';
import { OtaError } from '../../shared/errors.js';
import { checkSchema, migrate, schemaVersion } from './migrations.js';
import type { TransactionOptions } from './store.js';

/**
 * The shared database module under the table modules (devices-table.ts, operators-table.ts, ...):
 * one better-sqlite3 connection with WAL, synchronous=FULL, foreign keys on, busy timeout 5 s,
 * migrations on open (see migrations.ts), its prepared-statement cache, the translation of SQLite
 * errors into OtaErrors and transactions. One instance per connection, nothing module-wide.
 *
 * Mapping, for the table modules: booleans are INTEGER 0/1; JSON columns are JSON text, parsed on
 * read (the helpers below).
 *
 * Constraint errors become OtaErrors: a duplicate key is E_CONFLICT naming the object, a missing
 * referenced row E_NOT_FOUND naming it; locked, read-only or full databases are E_IO.
 */

export type SqlValue = string | number | bigint | Buffer | null;

// ---- mapping helpers ----

export function json(value: unknown): string {
  return JSON.stringify(value);
}

export function jsonOrNull(value: unknown): string | null {
  return value === null || value === undefined ? null : JSON.stringify(value);
}

export function parse<T>(text: string): T {
  return JSON.parse(text) as T;
}

export function parseOrNull<T>(text: string | null): T | null {
  return text === null ? null : (JSON.parse(text) as T);
}

/**
 * The page cache of each connection (https://sqlite.org/pragma.html#pragma_cache_size; negative:
 * KiB): 4 MiB instead of better-sqlite3's compiled default of 16 MiB (deps/defines.gypi). Pages
 * it drops are read again from the kernel's file cache, which is not the coordinator's memory.
 * Measured through Mosquitto (BENCHMARKS.md, 2026-12-07 "memory"): the coordinator's peak RSS
 * 5-11 MB lower at 10,000 devices and ~33 MB lower at 19,800, ingest unchanged (3 pairs).
 */
export const CACHE_SIZE_PRAGMA = -4096;

export const bool = (value: boolean): number => (value ? 1 : 0);

/** SQL lists of the shared vocabulary (shared/states.ts): the statuses are fixed identifiers, not input. */
export const sqlList = (values: readonly string[]) => `(${values.map((v) => `'${v}'`).join(', ')})`;

// ---- errors ----

export interface ErrorNames {
  /** Message for a duplicate primary key / unique constraint. */
  conflict?: string;
  /** Message for a foreign-key violation, computed after the failure (it may look rows up). */
  missing?: () => string;
}

const IO_CODES = /^SQLITE_(BUSY|LOCKED|READONLY|FULL|IOERR|CORRUPT|NOTADB|CANTOPEN|PERM)/;

export function translateError(err: unknown, names: ErrorNames = {}): unknown {
  if (!(err instanceof Database.SqliteError)) return err;
  const code = err.code;
  if (code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === 'SQLITE_CONSTRAINT_UNIQUE') {
    return new OtaError('E_CONFLICT', names.conflict ?? `already exists (${err.message})`, { cause: err });
  }
  if (code === 'SQLITE_CONSTRAINT_FOREIGNKEY') {
    return new OtaError('E_NOT_FOUND', names.missing?.() ?? `a referenced object does not exist (${err.message})`, {
      cause: err,
    });
  }
  if (code === 'SQLITE_CONSTRAINT_CHECK' || code === 'SQLITE_CONSTRAINT_NOTNULL') {
    return new OtaError('E_INTERNAL', `invalid value written to the store: ${err.message}`, { cause: err });
  }
  if (IO_CODES.test(code)) {
    const hint =
      code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')
        ? ' (another process holds the database lock)'
        : code.startsWith('SQLITE_READONLY')
          ? ' (the store is open read-only)'
          : '';
    return new OtaError('E_IO', `database error ${code}: ${err.message}${hint}`, { cause: err });
  }
  return err;
}

export interface StoreOptions {
  /** Open an existing database without writing to it (no migrations: it must be current). */
  readonly?: boolean;
}

/** The connection settings the store runs with (for diagnostics and tests). */
export interface StoreSettings {
  journalMode: string;
  synchronous: number;
  foreignKeys: boolean;
  busyTimeoutMs: number;
  /** PRAGMA cache_size: pages, or KiB when negative (CACHE_SIZE_PRAGMA). */
  cacheSize: number;
  schemaVersion: number;
}

export class Db {
  private readonly statements = new Map<string, Database.Statement<unknown[], unknown>>();

  private constructor(
    /** The connection, for modules that prepare their own statements (audit-chain.ts). */
    readonly connection: Database.Database,
    readonly file: string,
    /** Opened with `readonly`: reads only, and transactions take no write lock. */
    readonly readonly: boolean,
  ) {}

  static open(file: string, options: StoreOptions = {}): Db {
    const readonly = options.readonly === true;
    const db = connect(file, readonly);
    try {
      db.pragma('busy_timeout = 5000');
      db.pragma(`cache_size = ${CACHE_SIZE_PRAGMA}`);
      if (!readonly) {
        const mode = db.pragma('journal_mode = WAL', { simple: true });
        if (mode !== 'wal')
          throw new OtaError('E_IO', `database ${file} cannot use WAL mode (journal_mode is ${mode})`);
      }
      db.pragma('synchronous = FULL');
      db.pragma('foreign_keys = ON');
      if (readonly) checkSchema(db, file);
      else migrate(db, { file });
      return new Db(db, file, readonly);
    } catch (err) {
      db.close();
      if (err instanceof Database.SqliteError && err.code === 'SQLITE_NOTADB') {
        throw new OtaError('E_IO', `${file} is not an SQLite database`, { cause: err });
      }
      throw translateError(err);
    }
  }

  /** A prepared statement, prepared once per connection. */
  q<R = unknown>(sql: string): Database.Statement<unknown[], R> {
    let stmt = this.statements.get(sql);
    if (!stmt) {
      stmt = this.connection.prepare(sql);
      this.statements.set(sql, stmt);
    }
    return stmt as Database.Statement<unknown[], R>;
  }

  /** Runs fn, turning an SQLite error into the OtaError that `names` words (see translateError). */
  guard<T>(names: ErrorNames, fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      throw translateError(err, names);
    }
  }

  transaction<T>(fn: () => T, options: TransactionOptions = {}): T {
    // Nested calls join the outer transaction (better-sqlite3 uses a savepoint). A top-level
    // write transaction takes the write lock at BEGIN (IMMEDIATE), so it never fails halfway
    // through on a lock upgrade.
    const tx = this.connection.transaction(fn);
    const relaxed = options.durable === false && !this.readonly && !this.connection.inTransaction;
    try {
      if (relaxed) this.connection.pragma('synchronous = NORMAL');
      return this.readonly ? tx.deferred() : tx.immediate();
    } catch (err) {
      throw translateError(err);
    } finally {
      if (relaxed) this.connection.pragma('synchronous = FULL');
    }
  }

  close(): void {
    if (this.connection.open) this.connection.close();
  }

  settings(): StoreSettings {
    const db = this.connection;
    return {
      journalMode: String(db.pragma('journal_mode', { simple: true })),
      synchronous: Number(db.pragma('synchronous', { simple: true })),
      foreignKeys: Number(db.pragma('foreign_keys', { simple: true })) === 1,
      busyTimeoutMs: Number(db.pragma('busy_timeout', { simple: true })),
      cacheSize: Number(db.pragma('cache_size', { simple: true })),
      schemaVersion: schemaVersion(db),
    };
  }
}

/**
 * Opens the connection. A read-only connection cannot create the WAL index (`-shm`) that a WAL
 * database needs once its last writer closed (SQLite then fails with SQLITE_CANTOPEN): in that
 * case the file is opened read-write with `PRAGMA query_only`, which refuses every write.
 */
function connect(file: string, readonly: boolean): Database.Database {
  try {
    return new Database(file, { readonly, fileMustExist: readonly, timeout: 5000 });
  } catch (err) {
    if (readonly && err instanceof Database.SqliteError && err.code === 'SQLITE_CANTOPEN') {
      try {
        const db = new Database(file, { fileMustExist: true, timeout: 5000 });
        db.pragma('query_only = ON');
        return db;
      } catch {
        // report the first error
      }
    }
    throw new OtaError('E_IO', `cannot open database ${file}: ${(err as Error).message}`, { cause: err });
  }
}
