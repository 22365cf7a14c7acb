import { statSync } from 'node:fs';
import Database from 'better-sqlite3';
import { OtaError } from '../../shared/errors.js';
import { CACHE_SIZE_PRAGMA, translateError } from '../store/db.js';
import { type Migration, migrate, schemaVersion } from '../store/migrations.js';

/**
 * The device metrics database, `metrics.db` beside `coordinator.db` in the data directory.
 *
 * A file of its own, not tables in coordinator.db: metrics are by far the largest and busiest
 * data (a summary per device per minute), and retention deletes millions of rows a day. In the
 * main database they would hold its one write lock during every group commit and prune, grow it
 * (SQLite reuses freed pages but never shrinks the file without a VACUUM) and make every backup
 * of the fleet's state carry gigabytes of telemetry. Apart, a lost or deleted metrics.db costs
 * history only, never the fleet's desired state or audit chain.
 *
 * Conventions are coordinator/store's (STRICT tables, versioned migrations run in one IMMEDIATE
 * transaction, prepared statements cached per connection) with one deliberate difference: times
 * are INTEGER milliseconds since the epoch, not ISO text, because every row carries one or two
 * and the tables are range-scanned by time (smaller rows, cheaper comparisons).
 *
 * Durability: WAL with synchronous=NORMAL. A commit is in the WAL (in the OS's page cache) when
 * it returns, so a crash or kill -9 of the coordinator loses nothing that was committed; a power
 * loss or kernel crash can lose the last commits before the next checkpoint (SQLite's documented
 * trade of synchronous=NORMAL in WAL mode). For telemetry that is the right trade: a device's
 * summary that was acknowledged and then lost to a power cut is a gap in a graph, and FULL would
 * cost an fsync per group commit on the coordinator's one thread.
 */

export const METRICS_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: 'device metrics: raw summary windows, minute rollups per scope, device-hour rollups',
    sql: `
-- One row per (device, model, version, source, window start): a summary re-sent (MQTT QoS 1 is
-- at-least-once) hits the primary key and is ignored. Key order serves the per-device range read
-- (device, model, source, time range), the version is last only to make the key unique.
CREATE TABLE windows (
  device_id      TEXT NOT NULL,
  model          TEXT NOT NULL,
  source         TEXT NOT NULL CHECK (source IN ('app', 'probe')),
  window_start   INTEGER NOT NULL,
  version        TEXT NOT NULL,
  window_seconds INTEGER NOT NULL CHECK (window_seconds >= 1),
  windows_merged INTEGER NOT NULL CHECK (windows_merged >= 1),
  received_at    INTEGER NOT NULL,
  count          INTEGER NOT NULL CHECK (count >= 0),
  errors         INTEGER NOT NULL CHECK (errors >= 0),
  series         TEXT NOT NULL,
  PRIMARY KEY (device_id, model, source, window_start, version)
) STRICT;
-- Retention deletes the oldest windows first.
CREATE INDEX windows_by_start ON windows (window_start);

-- Merged series per scope ('fleet', or 'group:' || name for the groups a device was in when its
-- summary arrived), model, source and minute of the window start, per version. A query over a
-- day reads 1,440 rows per version through the primary key, whatever the fleet's size.
CREATE TABLE minute_rollups (
  scope   TEXT NOT NULL,
  model   TEXT NOT NULL,
  source  TEXT NOT NULL CHECK (source IN ('app', 'probe')),
  minute  INTEGER NOT NULL,
  version TEXT NOT NULL,
  series  TEXT NOT NULL,
  PRIMARY KEY (scope, model, source, minute, version)
) STRICT;
CREATE INDEX minute_rollups_by_minute ON minute_rollups (minute);

-- Merged series per device and hour: the by-device view, and the distinct devices of a range.
-- A rowid table, so its primary key is an index without the series JSON: counting distinct
-- devices over a day reads that narrow index only.
CREATE TABLE device_hours (
  model     TEXT NOT NULL,
  source    TEXT NOT NULL CHECK (source IN ('app', 'probe')),
  hour      INTEGER NOT NULL,
  device_id TEXT NOT NULL,
  version   TEXT NOT NULL,
  series    TEXT NOT NULL,
  PRIMARY KEY (model, source, hour, device_id, version)
) STRICT;
CREATE INDEX device_hours_by_hour ON device_hours (hour);

-- Rows per table, kept in the transactions that insert and delete them: stats() must not count
-- hundreds of millions of rows for every scrape of /metrics.
CREATE TABLE row_counts (
  name TEXT PRIMARY KEY,
  rows INTEGER NOT NULL
) STRICT;
INSERT INTO row_counts (name, rows) VALUES ('windows', 0), ('minute_rollups', 0), ('device_hours', 0);
`,
  },
  {
    version: 2,
    description: 'cohort series: per device and version, everything since an experiment started',
    sql: `
-- What an experiment compares (docs/experiments.md): per cohort (an experiment), device, source
-- and version, the merge of every window that started after the cohort did. Written in the
-- same transaction as the raw window, only when that row was inserted, so a re-sent summary
-- counts once; a comparison reads one row per device, not its thousands of windows.
CREATE TABLE cohort_series (
  cohort     TEXT NOT NULL,
  source     TEXT NOT NULL CHECK (source IN ('app', 'probe')),
  device_id  TEXT NOT NULL,
  version    TEXT NOT NULL,
  updated_at INTEGER NOT NULL,
  series     TEXT NOT NULL,
  PRIMARY KEY (cohort, source, device_id, version)
) STRICT;
-- Retention deletes the rows of cohorts that stopped receiving summaries longest ago.
CREATE INDEX cohort_series_by_update ON cohort_series (updated_at);
`,
  },
];

export const METRICS_SCHEMA_VERSION: number = METRICS_MIGRATIONS.reduce((max, m) => Math.max(max, m.version), 0);

/** One connection to metrics.db with its prepared statements. */
export class MetricsDb {
  private readonly statements = new Map<string, Database.Statement<unknown[], unknown>>();

  private constructor(
    readonly connection: Database.Database,
    readonly file: string,
  ) {}

  static open(file: string): MetricsDb {
    let db: Database.Database;
    try {
      db = new Database(file, { timeout: 5000 });
    } catch (err) {
      throw new OtaError('E_IO', `cannot open metrics database ${file}: ${(err as Error).message}`, { cause: err });
    }
    try {
      db.pragma('busy_timeout = 5000');
      db.pragma(`cache_size = ${CACHE_SIZE_PRAGMA}`);
      const mode = db.pragma('journal_mode = WAL', { simple: true });
      if (mode !== 'wal')
        throw new OtaError('E_IO', `metrics database ${file} cannot use WAL mode (journal_mode is ${mode})`);
      db.pragma('synchronous = NORMAL');
      const version = schemaVersion(db);
      if (version > METRICS_SCHEMA_VERSION) {
        throw new OtaError(
          'E_CONFIG',
          `metrics database ${file} has schema version ${version}, newer than this ota-coordinator knows (${METRICS_SCHEMA_VERSION}): ` +
            'run the newer ota-coordinator that wrote it, or move the file away (it holds metrics history only)',
        );
      }
      migrate(db, { file, migrations: METRICS_MIGRATIONS });
      return new MetricsDb(db, file);
    } catch (err) {
      db.close();
      if (err instanceof Database.SqliteError && err.code === 'SQLITE_NOTADB') {
        throw new OtaError('E_IO', `${file} is not an SQLite database: move it away (it should hold metrics history)`, {
          cause: err,
        });
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

  /** A write transaction (IMMEDIATE: it never fails halfway on a lock upgrade). */
  write<T>(fn: () => T): T {
    try {
      return this.connection.transaction(fn).immediate();
    } catch (err) {
      throw translateError(err);
    }
  }

  /** Bytes on disk: the database file, its WAL, and the free pages inside the file (reused before it grows). */
  bytes(): { file: number; wal: number; free: number } {
    const pageSize = Number(this.connection.pragma('page_size', { simple: true }));
    const free = Number(this.connection.pragma('freelist_count', { simple: true })) * pageSize;
    return { file: sizeOf(this.file), wal: sizeOf(`${this.file}-wal`), free };
  }

  get open(): boolean {
    return this.connection.open;
  }

  close(): void {
    if (this.connection.open) this.connection.close();
  }
}

function sizeOf(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}
