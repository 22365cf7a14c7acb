import { OtaError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import type { Metrics } from '../../shared/messages.js';
import { PacedFlush, type PacedTimers } from '../paced-flush.js';
import { MetricsDb } from './metrics-db.js';
import { type MetricsQuery, type MetricsResult, runQuery } from './query.js';
import { type Merged, mergedFromJson, mergedOfSeries, mergedToJson, mergeMerged, storedOfSeries } from './series.js';

/**
 * Device metrics storage (docs/metrics.md): raw summary windows, the rollups kept as they
 * arrive, queries over both, and retention. See metrics-db.ts for the tables and why they live in
 * a file of their own.
 *
 * Group commit: `ingest` queues a summary and resolves once it is committed, together with every
 * other summary queued meanwhile, in one transaction (PacedFlush: the next turn when the store was
 * quiet, at most once per `commitEveryMs` under load). The broker acknowledges a device's PUBLISH
 * only then, so a coordinator killed after the acknowledgement loses nothing (metrics-db.ts,
 * durability); a summary not yet acknowledged is sent again by the device (QoS 1), and the raw
 * table's primary key drops the copy: a rollup merges a window only when its row was inserted.
 */

export const DEFAULT_RETENTION_DAYS = 14;
const DEFAULT_COMMIT_EVERY_MS = 50;
/** Summaries per transaction at most: a burst (a reconnecting fleet) commits in slices. */
const DEFAULT_MAX_BATCH = 5000;
/**
 * Rows one retention DELETE removes before it yields to the event loop: ~25 ms of work on a
 * small machine (bench:metrics; the raw table's rows are scattered over its device-first key).
 */
const PRUNE_CHUNK = 1000;
const MINUTE_MS = 60_000;
const HOUR_MS = 3_600_000;
const DAY_MS = 86_400_000;

export interface MetricsRecorderDeps {
  /** metrics.db in the coordinator's data directory. */
  file: string;
  now: () => Date;
  logger: Logger;
  /** Days of windows and rollups kept (default 14). */
  retentionDays?: number;
  /**
   * Days of raw windows kept, at most retentionDays (default: retentionDays). Raw windows are
   * nearly all of the bytes (~0.9 KB per summary, bench:metrics) and only device-list queries
   * read them; the rollups answer the rest.
   */
  rawRetentionDays?: number;
  /** The groups a device belongs to now: its summaries count in these groups' rollups. */
  groupsOf: (deviceId: string) => readonly string[];
  /**
   * The cohorts (running experiments) a device's series of `model` counts in, each from its
   * start (ms since the epoch): a window that started before is not the experiment's.
   */
  cohortsOf?: (deviceId: string, model: string) => readonly Cohort[];
  /** Group commit interval (default 50 ms). */
  commitEveryMs?: number;
  maxBatch?: number;
  timers?: PacedTimers;
}

export interface Cohort {
  cohort: string;
  since: number;
}

export interface MetricsStats {
  /** Summaries committed since start (each one message, all its series). */
  summaries: number;
  /** Series stored as new windows since start. */
  windows: number;
  /** Series ignored since start because the same window was stored already (a re-sent summary). */
  duplicates: number;
  /** Series ignored since start because their window is older than the retention. */
  expired: number;
  /** Summaries queued for the next commit. */
  pending: number;
  rows: { windows: number; minuteRollups: number; deviceHours: number };
  bytes: { file: number; wal: number; free: number };
}

export interface PruneResult {
  windows: number;
  minuteRollups: number;
  deviceHours: number;
  cohortSeries: number;
}

interface SeriesRow {
  model: string;
  version: string;
  source: string;
  count: number;
  errors: number;
  json: string;
  merged: Merged;
  cohorts: readonly Cohort[];
}

interface Queued {
  deviceId: string;
  groups: readonly string[];
  windowStart: number;
  windowSeconds: number;
  windowsMerged: number;
  receivedAt: number;
  series: SeriesRow[];
  resolve: () => void;
  reject: (err: unknown) => void;
}

interface Delta {
  params: (string | number)[];
  merged: Merged;
}

/**
 * Timers that keep the process alive (PacedFlush's default ones are unref'd): a queued summary is
 * committed, at most `commitEveryMs` later, even when nothing else is left running; close()
 * commits at once and cancels the timer.
 */
const COMMIT_TIMERS: PacedTimers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

const TABLES = { windows: 'windows', minuteRollups: 'minute_rollups', deviceHours: 'device_hours' } as const;

export class MetricsRecorder {
  private readonly db: MetricsDb;
  private readonly retentionMs: number;
  private readonly rawRetentionMs: number;
  private readonly maxBatch: number;
  private readonly paced: PacedFlush;
  private queue: Queued[] = [];
  private closed = false;
  private readonly counters = { summaries: 0, windows: 0, duplicates: 0, expired: 0 };
  /** Transactions committed since start: what a reader caches against (version). */
  private commits = 0;

  constructor(private readonly deps: MetricsRecorderDeps) {
    const days = deps.retentionDays ?? DEFAULT_RETENTION_DAYS;
    if (!(Number.isFinite(days) && days > 0)) {
      throw new OtaError('E_CONFIG', `metrics retention must be a positive number of days, got ${days}`);
    }
    const rawDays = deps.rawRetentionDays ?? days;
    if (!(Number.isFinite(rawDays) && rawDays > 0 && rawDays <= days)) {
      throw new OtaError(
        'E_CONFIG',
        `metrics raw retention must be a positive number of days, at most the retention (${days}), got ${rawDays}`,
      );
    }
    this.retentionMs = days * DAY_MS;
    this.rawRetentionMs = rawDays * DAY_MS;
    this.maxBatch = deps.maxBatch ?? DEFAULT_MAX_BATCH;
    this.db = MetricsDb.open(deps.file);
    this.paced = new PacedFlush(
      () => this.flush(),
      deps.commitEveryMs ?? DEFAULT_COMMIT_EVERY_MS,
      () => deps.now().getTime(),
      deps.timers ?? COMMIT_TIMERS,
    );
  }

  /**
   * Stores one parsed summary (MetricsSchema) of `deviceId`; resolves once it is committed.
   * Rejects when the store cannot write (the broker then does not acknowledge, and the device
   * sends the summary again).
   */
  ingest(deviceId: string, message: Metrics): Promise<void> {
    if (this.closed) return Promise.reject(new OtaError('E_IO', 'the metrics store is closed (coordinator stopping)'));
    const windowStart = Date.parse(message.windowStart);
    if (Number.isNaN(windowStart)) {
      return Promise.reject(
        new OtaError(
          'E_PAYLOAD_SCHEMA',
          `metrics windowStart ${message.windowStart} is not a date: parse with MetricsSchema`,
        ),
      );
    }
    const receivedAt = this.deps.now().getTime();
    const windowsMerged = message.windowsMerged ?? 1;
    let series: SeriesRow[] = [];
    if (windowStart < receivedAt - this.retentionMs) {
      // Retention would delete it at the next prune; in a rollup it would outlive its window.
      this.counters.expired += message.series.length;
    } else {
      series = message.series.map((s) => {
        const stored = storedOfSeries(s);
        return {
          model: s.model,
          version: s.version,
          source: s.source,
          count: s.count,
          errors: s.errors,
          json: JSON.stringify(stored),
          merged: mergedOfSeries(stored, s.count, s.errors, windowsMerged),
          cohorts: this.deps.cohortsOf?.(deviceId, s.model) ?? [],
        };
      });
    }
    return new Promise<void>((resolve, reject) => {
      this.queue.push({
        deviceId,
        groups: series.length > 0 ? this.deps.groupsOf(deviceId) : [],
        windowStart,
        windowSeconds: message.windowSeconds,
        windowsMerged,
        receivedAt,
        series,
        resolve,
        reject,
      });
      this.paced.schedule(this.queue.length >= this.maxBatch);
    });
  }

  /** Commits everything queued now (shutdown; a query must see acknowledged summaries). */
  flushNow(): void {
    this.paced.cancel();
    this.flush();
  }

  private flush(): void {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, this.maxBatch);
      try {
        const { inserted, duplicates } = this.db.write(() => this.commit(batch));
        this.commits++;
        this.counters.summaries += batch.length;
        this.counters.windows += inserted;
        this.counters.duplicates += duplicates;
        for (const q of batch) q.resolve();
      } catch (err) {
        this.deps.logger.error({ err, summaries: batch.length }, 'metrics: storing summaries failed');
        for (const q of batch) q.reject(err);
      }
    }
  }

  /** Inside the transaction: raw rows, then each touched rollup row read, merged and written once. */
  private commit(batch: Queued[]): { inserted: number; duplicates: number } {
    const insert = this.db.q(
      `INSERT OR IGNORE INTO windows (device_id, model, source, window_start, version, window_seconds,
         windows_merged, received_at, count, errors, series) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    const minutes = new Map<string, Delta>();
    const hours = new Map<string, Delta>();
    const cohorts = new Map<string, Delta>();
    const add = (into: Map<string, Delta>, params: (string | number)[], merged: Merged) => {
      const key = params.join('\u0000');
      const had = into.get(key);
      if (had) had.merged = mergeMerged(had.merged, merged);
      else into.set(key, { params, merged });
    };
    let inserted = 0;
    let duplicates = 0;
    for (const q of batch) {
      const minute = Math.floor(q.windowStart / MINUTE_MS) * MINUTE_MS;
      const hour = Math.floor(q.windowStart / HOUR_MS) * HOUR_MS;
      for (const s of q.series) {
        const info = insert.run(
          q.deviceId,
          s.model,
          s.source,
          q.windowStart,
          s.version,
          q.windowSeconds,
          q.windowsMerged,
          q.receivedAt,
          s.count,
          s.errors,
          s.json,
        );
        if (info.changes === 0) {
          duplicates++;
          continue;
        }
        inserted++;
        add(minutes, ['fleet', s.model, s.source, minute, s.version], s.merged);
        for (const g of q.groups) add(minutes, [`group:${g}`, s.model, s.source, minute, s.version], s.merged);
        add(hours, [s.model, s.source, hour, q.deviceId, s.version], s.merged);
        for (const c of s.cohorts) {
          if (q.windowStart >= c.since) add(cohorts, [c.cohort, s.source, q.deviceId, s.version], s.merged);
        }
      }
    }
    const newMinutes = this.mergeInto(
      minutes,
      'SELECT series FROM minute_rollups WHERE scope = ? AND model = ? AND source = ? AND minute = ? AND version = ?',
      `INSERT INTO minute_rollups (scope, model, source, minute, version, series) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (scope, model, source, minute, version) DO UPDATE SET series = excluded.series`,
    );
    const newHours = this.mergeInto(
      hours,
      'SELECT series FROM device_hours WHERE model = ? AND source = ? AND hour = ? AND device_id = ? AND version = ?',
      `INSERT INTO device_hours (model, source, hour, device_id, version, series) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (model, source, hour, device_id, version) DO UPDATE SET series = excluded.series`,
    );
    this.mergeInto(
      cohorts,
      'SELECT series FROM cohort_series WHERE cohort = ? AND source = ? AND device_id = ? AND version = ?',
      `INSERT INTO cohort_series (cohort, source, device_id, version, updated_at, series) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (cohort, source, device_id, version) DO UPDATE SET updated_at = excluded.updated_at, series = excluded.series`,
      [this.deps.now().getTime()],
    );
    this.countRows(TABLES.windows, inserted);
    this.countRows(TABLES.minuteRollups, newMinutes);
    this.countRows(TABLES.deviceHours, newHours);
    return { inserted, duplicates };
  }

  /**
   * Merges each delta into its stored row; returns the rows created. `extra` values are written
   * between the key and the series (the cohort rows' updated_at).
   */
  private mergeInto(
    deltas: Map<string, Delta>,
    select: string,
    upsert: string,
    extra: (string | number)[] = [],
  ): number {
    const read = this.db.q<{ series: string }>(select);
    const write = this.db.q(upsert);
    let created = 0;
    for (const { params, merged } of deltas.values()) {
      const row = read.get(...params);
      if (!row) created++;
      write.run(...params, ...extra, mergedToJson(row ? mergeMerged(mergedFromJson(row.series), merged) : merged));
    }
    return created;
  }

  private countRows(table: string, delta: number): void {
    if (delta !== 0) this.db.q('UPDATE row_counts SET rows = rows + ? WHERE name = ?').run(delta, table);
  }

  /** Metrics of one model over a range (query.ts). Commits queued summaries first. */
  query(q: MetricsQuery): MetricsResult {
    this.assertOpen();
    this.flushNow();
    return runQuery(this.db, q);
  }

  /**
   * A number that changes whenever a summary is committed (queued ones are committed first): a
   * reader that cached what it read may keep it while the version is the same.
   */
  version(): number {
    this.assertOpen();
    this.flushNow();
    return this.commits;
  }

  /**
   * Everything each device of `cohort` sent since the cohort started, per device and version
   * (one row each: an experiment's comparison reads as many rows as it has devices). Commits
   * queued summaries first.
   */
  cohortSeries(cohort: string, source: 'app' | 'probe' = 'app'): Map<string, Map<string, Merged>> {
    this.assertOpen();
    this.flushNow();
    const out = new Map<string, Map<string, Merged>>();
    for (const r of this.db
      .q<{ device_id: string; version: string; series: string }>(
        'SELECT device_id, version, series FROM cohort_series WHERE cohort = ? AND source = ?',
      )
      .iterate(cohort, source)) {
      let versions = out.get(r.device_id);
      if (!versions) {
        versions = new Map();
        out.set(r.device_id, versions);
      }
      versions.set(r.version, mergedFromJson(r.series));
    }
    return out;
  }

  /**
   * Deletes windows and rollups older than the retention (by window start) in slices of
   * PRUNE_CHUNK rows, each its own short transaction, yielding to the event loop between slices
   * so ingest and the broker go on. The coordinator calls it at start and hourly.
   */
  async prune(now: Date = this.deps.now()): Promise<PruneResult> {
    const cutoff = now.getTime() - this.retentionMs;
    // A rollup row goes once all of its minute (hour) is before the cutoff.
    const out: PruneResult = {
      windows: await this.pruneTable(TABLES.windows, 'window_start', now.getTime() - this.rawRetentionMs),
      minuteRollups: await this.pruneTable(TABLES.minuteRollups, 'minute', Math.floor(cutoff / MINUTE_MS) * MINUTE_MS),
      deviceHours: await this.pruneTable(TABLES.deviceHours, 'hour', Math.floor(cutoff / HOUR_MS) * HOUR_MS),
      // A cohort row is updated while its experiment runs: it goes a retention after the last summary.
      cohortSeries: await this.pruneTable('cohort_series', 'updated_at', cutoff, false),
    };
    if (out.windows + out.minuteRollups + out.deviceHours + out.cohortSeries > 0) {
      this.deps.logger.info({ ...out, before: new Date(cutoff).toISOString() }, 'metrics: pruned by retention');
    }
    return out;
  }

  private async pruneTable(table: string, column: string, before: number, counted = true): Promise<number> {
    let total = 0;
    for (;;) {
      if (this.closed) return total;
      const deleted = this.db.write(() => {
        const n = this.db
          .q(
            `DELETE FROM ${table} WHERE rowid IN (SELECT rowid FROM ${table} WHERE ${column} < ? LIMIT ${PRUNE_CHUNK})`,
          )
          .run(before).changes;
        if (counted) this.countRows(table, -n);
        return n;
      });
      total += deleted;
      if (deleted < PRUNE_CHUNK) return total;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  /** Aggregate numbers for /metrics (no device ids). */
  stats(): MetricsStats {
    this.assertOpen();
    const rows = new Map(
      this.db
        .q<{ name: string; rows: number }>('SELECT name, rows FROM row_counts')
        .all()
        .map((r) => [r.name, r.rows]),
    );
    return {
      ...this.counters,
      pending: this.queue.length,
      rows: {
        windows: rows.get(TABLES.windows) ?? 0,
        minuteRollups: rows.get(TABLES.minuteRollups) ?? 0,
        deviceHours: rows.get(TABLES.deviceHours) ?? 0,
      },
      bytes: this.db.bytes(),
    };
  }

  /** Checkpoints the WAL into the database file (benchmarks measure bytes after it). */
  checkpoint(): void {
    this.assertOpen();
    this.db.connection.pragma('wal_checkpoint(TRUNCATE)');
  }

  /** Commits what is queued, then closes the database. Later calls reject. */
  close(): void {
    if (this.closed) return;
    this.flushNow();
    this.closed = true;
    this.db.close();
  }

  private assertOpen(): void {
    if (this.closed) throw new OtaError('E_IO', 'the metrics store is closed (coordinator stopping)');
  }
}
