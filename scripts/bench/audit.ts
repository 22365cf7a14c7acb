#!/usr/bin/env node
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { HistoryRecord } from '../../coordinator/store/records.js';
import { openStore } from '../../coordinator/store/sqlite-store.js';
import {
  log,
  machine,
  numberList,
  parseArgs,
  printResult,
  revision,
  round,
  type Spread,
  spread,
  wallMs,
} from './common.js';

/**
 * `npm run bench:audit`: durable writes of the coordinator's store (coordinator/store/sqlite-store.ts,
 * WAL with synchronous=FULL, on a fresh database file in the temp directory):
 *
 *  - decision events: one `store.appendAudit([event])` per `store.transaction`, the way the
 *    rollout shell commits one decision (a device outcome) at a time: durable events per second;
 *  - device history: `store.appendHistory(batch)` (one transaction per batch): rows per second,
 *    for each batch size;
 *  - `store.verifyAudit()` over the whole chain: rows per second.
 *
 * Each measurement is repeated `--runs` times on a new database; the JSON has median, min, max.
 */

const args = parseArgs(
  process.argv.slice(2),
  {
    events: { default: 4000, help: 'decision events per run (one transaction each)' },
    'history-rows': { default: 100_000, help: 'history rows per run and batch size' },
    batches: { default: '1,100,1000', help: 'history batch sizes (rows per transaction)' },
    'verify-rows': { default: 100_000, help: 'audit rows in the chain that verifyAudit walks' },
    runs: { default: 3, help: 'repetitions (each on a new database)' },
  },
  'npm run bench:audit -- [options]',
);

const SUBJECT_DETAILS = (i: number) => ({
  rolloutId: 'ro-bench',
  device: `sim-${String(i).padStart(5, '0')}`,
  wave: 2,
  state: 'healthy',
});

async function withStore<T>(fn: (store: ReturnType<typeof openStore>) => T): Promise<T> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-bench-audit-'));
  const store = openStore(path.join(dir, 'coordinator.db'));
  try {
    const settings = store.settings();
    if (settings.journalMode !== 'wal' || settings.synchronous !== 2) {
      throw new Error(`store runs with journal_mode=${settings.journalMode} synchronous=${settings.synchronous}`);
    }
    return fn(store);
  } finally {
    store.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** Events per second, and the CPU share of the time (the rest is waiting for fsync). */
function decisionEvents(n: number): Promise<{ perSec: number; cpuShare: number; wallUsPerEvent: number }> {
  return withStore((store) => {
    const t0 = wallMs();
    const cpu0 = process.cpuUsage();
    for (let i = 0; i < n; i++) {
      const now = new Date().toISOString();
      store.transaction(() =>
        store.appendAudit(
          [
            {
              actor: 'coordinator',
              action: 'rollout.device_outcome',
              subject: 'rollout:ro-bench',
              details: SUBJECT_DETAILS(i),
            },
          ],
          now,
        ),
      );
    }
    const ms = wallMs() - t0;
    const cpu = process.cpuUsage(cpu0);
    const cpuMs = (cpu.user + cpu.system) / 1000;
    return { perSec: n / (ms / 1000), cpuShare: round(cpuMs / ms, 2), wallUsPerEvent: round((ms * 1000) / n, 1) };
  });
}

function history(rows: number, batch: number): Promise<number> {
  return withStore((store) => {
    const ts = new Date().toISOString();
    const make = (i: number): HistoryRecord => ({
      deviceId: `sim-${String(i % 10_000).padStart(5, '0')}`,
      model: 'bench-model',
      state: 'healthy',
      version: '2.0.0',
      rolloutId: 'ro-bench',
      error: null,
      ts,
    });
    const t0 = wallMs();
    for (let done = 0; done < rows; done += batch) {
      const size = Math.min(batch, rows - done);
      store.appendHistory(Array.from({ length: size }, (_, k) => make(done + k)));
    }
    return rows / ((wallMs() - t0) / 1000);
  });
}

function verify(rows: number): Promise<{ rowsPerSec: number; count: number; ok: boolean }> {
  return withStore((store) => {
    const now = new Date().toISOString();
    const chunk = 1000;
    for (let done = 0; done < rows; done += chunk) {
      const size = Math.min(chunk, rows - done);
      store.appendAudit(
        Array.from({ length: size }, (_, k) => ({
          actor: 'coordinator',
          action: 'rollout.device_outcome',
          subject: 'rollout:ro-bench',
          details: SUBJECT_DETAILS(done + k),
        })),
        now,
      );
    }
    const t0 = wallMs();
    const verdict = store.verifyAudit();
    const ms = wallMs() - t0;
    return { rowsPerSec: verdict.count / (ms / 1000), count: verdict.count, ok: verdict.ok };
  });
}

async function main(): Promise<void> {
  const runs = Math.max(1, Math.floor(args.runs));
  const events: number[] = [];
  const cpuShares: number[] = [];
  const wallUs: number[] = [];
  for (let r = 0; r < runs; r++) {
    const e = await decisionEvents(args.events);
    events.push(e.perSec);
    cpuShares.push(e.cpuShare);
    wallUs.push(e.wallUsPerEvent);
    log(`decision events run ${r + 1}: ${Math.round(e.perSec)}/s (cpu share ${e.cpuShare})`);
  }
  const historyResults: { batch: number; rowsPerSec: Spread }[] = [];
  for (const batch of numberList(args.batches)) {
    const rates: number[] = [];
    // Per-row transactions are fsync-bound: fewer rows keep the run short.
    const rows = batch === 1 ? Math.min(args['history-rows'], args.events) : args['history-rows'];
    for (let r = 0; r < runs; r++) {
      rates.push(await history(rows, batch));
      log(`history batch ${batch} run ${r + 1}: ${Math.round(rates.at(-1) as number)} rows/s`);
    }
    historyResults.push({ batch, rowsPerSec: spread(rates, 0) });
  }
  const verifyRates: number[] = [];
  let verified = { count: 0, ok: false };
  for (let r = 0; r < runs; r++) {
    const v = await verify(args['verify-rows']);
    verifyRates.push(v.rowsPerSec);
    verified = v;
    log(`verify run ${r + 1}: ${Math.round(v.rowsPerSec)} rows/s (${v.count} rows, ok ${v.ok})`);
  }
  const eventsSpread = spread(events, 0);
  const batched = historyResults.filter((h) => h.batch >= 100).map((h) => h.rowsPerSec.median);
  const bestBatched = batched.length > 0 ? Math.max(...batched) : null;
  printResult({
    benchmark: 'audit',
    command: `npm run bench:audit -- ${process.argv.slice(2).join(' ')}`.trim(),
    machine: machine(),
    revision: revision(),
    params: {
      events: args.events,
      historyRows: args['history-rows'],
      verifyRows: args['verify-rows'],
      runs,
      store:
        'coordinator/store/sqlite-store.ts openStore: WAL, synchronous=FULL, temp dir on the same filesystem as the coordinator data',
    },
    decisionEvents: {
      perSec: eventsSpread,
      wallUsPerEvent: spread(wallUs, 1),
      /** CPU time / wall time of the loop: the rest is the fsync of each commit. */
      cpuShare: spread(cpuShares, 2),
      transactions: 'one store.transaction + store.appendAudit per event',
    },
    history: historyResults,
    verify: { rowsPerSec: spread(verifyRates, 0), rows: verified.count, ok: verified.ok },
    goals: [
      {
        goal: 'durable decision events per second',
        target: '>= 4000',
        value: eventsSpread.median,
        met: eventsSpread.median >= 4000,
      },
      {
        goal: 'history rows per second, batched',
        target: '>= 50000',
        value: bestBatched === null ? null : round(bestBatched, 0),
        met: bestBatched === null ? null : bestBatched >= 50_000,
      },
    ],
  });
}

main().catch((err: Error) => {
  process.stderr.write(`bench:audit: ${err.stack ?? err.message}\n`);
  process.exitCode = 1;
});
