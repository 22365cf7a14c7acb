#!/usr/bin/env node
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { HistoryRecord } from '../../coordinator/store/records.js';
import { openStore, type SqliteStore } from '../../coordinator/store/sqlite-store.js';
import { WRITE_BEHIND } from '../../coordinator/store/store.js';
import { log, machine, parseArgs, printResult, revision, round, type Spread, spread } from './common.js';
import { SAMPLE_MODEL, sampleReport } from './sample-report.js';

/**
 * `npm run bench:report-writes -- --devices 50000`: the coordinator's write-behind of device
 * reports alone (coordinator/ingest/report-recorder.ts's transaction, on the real store: WAL,
 * synchronous=NORMAL for it), without MQTT, parsing or the rest of the coordinator.
 *
 * A fresh database gets `--devices` enrolled devices, each with a report and `--history` history
 * rows (a finished rollout's). Then every device reports `--reports` more times, in random device
 * order, written `--batch` reports per transaction (750 is 50 ms at 15,000 reports/s): one
 * `setDeviceReport` and one history row per report, as a burst of reports whose time changed.
 * Per report, split: the UPDATEs, the history INSERTs, and the COMMIT (which writes every page
 * the transaction dirtied to the WAL, and checkpoints now and then), and the CPU time per report
 * (the rest of the wall time waited on the disk).
 *
 * `--drop-history-index`: the same without device_history's (device_id, id) index, to see what
 * that index costs (an experiment: `device history` needs it).
 *
 * `--history-batch N`: history rows are not written with their reports but gathered and written
 * N at a time, sorted by device, each batch in a transaction of its own (timed as `history`,
 * its commit included): what a history writer with batches of its own would cost per row.
 */

const args = parseArgs(
  process.argv.slice(2),
  {
    devices: { default: 10_000, help: 'enrolled devices' },
    history: { default: 5, help: 'history rows per device before the measured reports' },
    reports: { default: 3, help: 'measured reports per device' },
    batch: { default: 750, help: 'reports per transaction' },
    runs: { default: 3, help: 'repetitions (each on a new database)' },
    'drop-history-index': { default: false, help: "without device_history's per-device index (an experiment)" },
    'history-batch': {
      default: 0,
      help: 'history rows gathered and written this many at a time, sorted by device, in transactions of their own (0: with their reports)',
    },
  },
  'npm run bench:report-writes -- [options]',
);

for (const [name, value, min] of [
  ['devices', args.devices, 1],
  ['history', args.history, 0],
  ['reports', args.reports, 1],
  ['batch', args.batch, 1],
  ['runs', args.runs, 1],
  ['history-batch', args['history-batch'], 0],
] as const) {
  if (!Number.isInteger(value) || value < min) {
    process.stderr.write(`--${name} must be a whole number >= ${min}, got ${value}\n`);
    process.exit(2);
  }
}

const MODEL = SAMPLE_MODEL;
const T0 = Date.parse('2026-12-07T10:00:00.000Z');
const report = sampleReport;

const row = (deviceId: string, at: string): HistoryRecord => ({
  deviceId,
  model: MODEL,
  state: 'healthy',
  version: '4.0.0',
  rolloutId: 'ro-bench-0001',
  error: null,
  ts: at,
});

/** A seeded shuffle (the same order in every run). */
function shuffled<T>(items: readonly T[], seed: number): T[] {
  const out = [...items];
  let x = seed;
  for (let i = out.length - 1; i > 0; i--) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    const j = x % (i + 1);
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

interface RunResult {
  usPerReport: { update: number; history: number; commit: number; total: number };
  /** This process's CPU time (user + system) per report: the rest of `total` waited on the disk. */
  cpuUsPerReport: number;
  reportsPerSec: number;
  fileMB: number;
  /** device_history's indexes while the reports were written, as SQLite lists them. */
  historyIndexes: string[];
  /** Rows in device_history at the end: devices x (history + reports) when every one was written. */
  historyRows: number;
}

function seed(store: SqliteStore, ids: readonly string[]): void {
  const at = new Date(T0).toISOString();
  store.transaction(() => {
    for (const id of ids) {
      store.addDevice({ id, labels: { bench: 'writes' }, channel: 'stable', tokenHash: 'f'.repeat(64), now: at });
      store.setDeviceReport(id, report(id, 1, at), at);
    }
    for (let h = 0; h < args.history; h++) store.appendHistory(ids.map((id) => row(id, at)));
  });
}

async function run(index: number): Promise<RunResult> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-bench-report-writes-'));
  const file = path.join(dir, 'coordinator.db');
  const store = openStore(file);
  try {
    const ids = Array.from({ length: args.devices }, (_, i) => `sim-${String(i).padStart(6, '0')}`);
    seed(store, ids);
    // A connection of its own: the store has no way to drop an index, on purpose.
    const raw = new Database(file);
    if (args['drop-history-index']) raw.exec('DROP INDEX device_history_device');
    const historyIndexes = raw
      .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'device_history' ORDER BY name")
      .pluck()
      .all() as string[];
    raw.close();
    const order: string[] = [];
    for (let r = 0; r < args.reports; r++) order.push(...shuffled(ids, 7 + r + index * 101));
    let update = 0n;
    let history = 0n;
    let commit = 0n;
    const gathered: HistoryRecord[] = [];
    /** --history-batch: the gathered rows, sorted by device, in a transaction of their own. */
    const writeGathered = () => {
      const t0 = process.hrtime.bigint();
      const rows = gathered.splice(0).sort((a, b) => (a.deviceId < b.deviceId ? -1 : a.deviceId > b.deviceId ? 1 : 0));
      store.transaction(() => store.appendHistory(rows), WRITE_BEHIND);
      history += process.hrtime.bigint() - t0;
    };
    const cpu0 = process.cpuUsage();
    const start = process.hrtime.bigint();
    for (let i = 0; i < order.length; i += args.batch) {
      const at = new Date(T0 + 1000 + i).toISOString();
      const batch = order.slice(i, i + args.batch);
      let t2 = 0n;
      store.transaction(() => {
        const t0 = process.hrtime.bigint();
        for (const id of batch) store.setDeviceReport(id, report(id, 2 + i, at), at);
        const t1 = process.hrtime.bigint();
        if (args['history-batch'] > 0) gathered.push(...batch.map((id) => row(id, at)));
        else store.appendHistory(batch.map((id) => row(id, at)));
        t2 = process.hrtime.bigint();
        update += t1 - t0;
        history += t2 - t1;
      }, WRITE_BEHIND);
      commit += process.hrtime.bigint() - t2;
      if (args['history-batch'] > 0 && gathered.length >= args['history-batch']) writeGathered();
    }
    if (gathered.length > 0) writeGathered();
    const totalNs = Number(process.hrtime.bigint() - start);
    const cpu = process.cpuUsage(cpu0);
    const counted = new Database(file, { readonly: true });
    const historyRows = (counted.prepare('SELECT COUNT(*) AS n FROM device_history').get() as { n: number }).n;
    counted.close();
    const us = (ns: bigint | number) => round(Number(ns) / 1000 / order.length, 2);
    return {
      usPerReport: { update: us(update), history: us(history), commit: us(commit), total: us(totalNs) },
      cpuUsPerReport: round((cpu.user + cpu.system) / order.length, 2),
      reportsPerSec: Math.round(order.length / (totalNs / 1e9)),
      fileMB: round((await fs.stat(file)).size / 1024 ** 2, 1),
      historyIndexes,
      historyRows,
    };
  } finally {
    store.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const runs: RunResult[] = [];
  for (let i = 0; i < args.runs; i++) {
    log(
      `run ${i + 1} of ${args.runs}: ${args.devices} devices, ${args.reports} reports each, ${args.batch} per transaction`,
    );
    runs.push(await run(i));
  }
  const of = (pick: (r: RunResult) => number): Spread => spread(runs.map(pick));
  printResult({
    benchmark: 'report-writes',
    command: `npm run bench:report-writes -- ${process.argv.slice(2).join(' ')}`.trim(),
    machine: machine(),
    revision: revision(),
    params: {
      devices: args.devices,
      historyRowsPerDevice: args.history,
      reportsPerDevice: args.reports,
      reportsPerTransaction: args.batch,
      historyIndex: !args['drop-history-index'],
      historyBatch: args['history-batch'] > 0 ? args['history-batch'] : 'with the reports',
    },
    usPerReport: {
      update: of((r) => r.usPerReport.update),
      history: of((r) => r.usPerReport.history),
      commit: of((r) => r.usPerReport.commit),
      total: of((r) => r.usPerReport.total),
    },
    cpuUsPerReport: of((r) => r.cpuUsPerReport),
    reportsPerSec: of((r) => r.reportsPerSec),
    fileMB: of((r) => r.fileMB),
    runs,
  });
}

main().catch((err: Error) => {
  process.stderr.write(`error: ${err.message}\n`);
  process.exitCode = 1;
});
