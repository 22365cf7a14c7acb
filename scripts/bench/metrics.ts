#!/usr/bin/env node
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { MetricsQuery } from '../../coordinator/metrics/query.js';
import { MetricsRecorder } from '../../coordinator/metrics/recorder.js';
import { createLogger } from '../../shared/logger.js';
import type { MetricSeries, Metrics } from '../../shared/messages.js';
import { CONFIDENCE_BINS, confidenceBin } from '../../shared/metrics/limits.js';
import { fromLibrarySketch, newAccumulator } from '../../shared/metrics/sketch.js';
import { mulberry32 } from '../mulberry32.js';
import { log, machine, median, parseArgs, printResult, revision, round, wallMs } from './common.js';

/**
 * `npm run bench:metrics`: device metrics storage (coordinator/metrics/) in-process, on a fresh
 * metrics.db in the temp directory, with simulated time (no waiting).
 *
 * A fleet of `--devices` devices, half on each of two versions (log-normal latency per version,
 * confidence from a skewed distribution, 1% errors, one custom value), sends one 60 s summary per
 * device and minute, built with @datadog/sketches-js as an agent builds it. 24 hours of that at
 * 10,000 devices is 14.4 M summaries, more than a run on a small machine should take, so the run
 * has two phases, both through the real ingest path:
 *
 *  - the first `--hours - --full-hours` hours sparse: each device reports every `--every`
 *    minutes (a rotating 1/every of the fleet each minute, both versions in every minute). The rollup tables then hold exactly
 *    the rows of the full fleet (every minute of every version in every scope; every device in
 *    every hour), only the raw table is 1/every of its full size;
 *  - the last `--full-hours` hours at full rate: every device every minute. Ingest cost and
 *    bytes per summary are measured here.
 *
 * Queries run over the last hour (full rate) and the whole run (24 h with the defaults).
 * Prints a plain table on stderr and ONE JSON document on stdout.
 */

export interface MetricsBenchOptions {
  devices: number;
  hours: number;
  fullHours: number;
  every: number;
  groupSize: number;
  observations: number;
  queryRuns: number;
  seed: number;
}

const MODEL = 'detector';
const VERSIONS = [
  { version: '1.0.0', mu: Math.log(20), sigma: 0.35 },
  { version: '1.1.0', mu: Math.log(17), sigma: 0.45 },
];
const MINUTE_MS = 60_000;
const HOUR_MS = 3_600_000;

function gaussian(random: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}

/** One device's summary of one minute: what its agent would send. */
function summary(
  random: () => number,
  v: (typeof VERSIONS)[number],
  windowStart: number,
  observations: number,
): Metrics {
  const latency = newAccumulator();
  const preprocess = newAccumulator();
  const confidence = new Array<number>(CONFIDENCE_BINS).fill(0);
  let errors = 0;
  for (let i = 0; i < observations; i++) {
    latency.accept(Math.exp(v.mu + v.sigma * gaussian(random)));
    preprocess.accept(Math.exp(1 + 0.3 * gaussian(random)));
    // Skewed towards 1, like a classifier's top score: 1 - u^3 of a uniform u.
    const bin = confidenceBin(1 - random() ** 3);
    confidence[bin] = (confidence[bin] as number) + 1;
    if (random() < 0.01) errors++;
  }
  const values = Object.create(null) as Record<string, ReturnType<typeof fromLibrarySketch>>;
  values.preprocess_ms = fromLibrarySketch(preprocess);
  const series: MetricSeries = {
    model: MODEL,
    version: v.version,
    source: 'app',
    count: observations,
    errors,
    latencyMs: fromLibrarySketch(latency),
    confidence,
    values,
  };
  return {
    ts: new Date(windowStart + MINUTE_MS).toISOString(),
    windowStart: new Date(windowStart).toISOString(),
    windowSeconds: 60,
    windowsMerged: 1,
    series: [series],
  };
}

const deviceId = (i: number) => `dev-${String(i).padStart(5, '0')}`;

interface Phase {
  summaries: number;
  wallMs: number;
  cpuMs: number;
}

export async function runMetricsBench(o: MetricsBenchOptions) {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-bench-metrics-'));
  const file = path.join(dir, 'metrics.db');
  const start = Date.UTC(2030, 0, 1);
  let clock = start;
  const group = new Set<string>();
  // One device in each stride of the fleet, at a rotating offset in it: the group spans both
  // versions and reports in every minute of the sparse phase too.
  const stride = Math.max(1, Math.floor(o.devices / Math.max(1, o.groupSize)));
  for (let k = 0; k * stride < o.devices && group.size < o.groupSize; k++)
    group.add(deviceId(Math.min(o.devices - 1, k * stride + (k % stride))));
  const canary = ['canary'] as const;
  const recorder = new MetricsRecorder({
    file,
    now: () => new Date(clock),
    logger: createLogger('silent', process.stderr, 'ota-coordinator'),
    groupsOf: (id) => (group.has(id) ? canary : []),
  });
  const random = mulberry32(o.seed);
  const sparse: Phase = { summaries: 0, wallMs: 0, cpuMs: 0 };
  const full: Phase = { summaries: 0, wallMs: 0, cpuMs: 0 };
  const totalMinutes = o.hours * 60;
  const fullFrom = (o.hours - o.fullHours) * 60;
  try {
    for (let m = 0; m < totalMinutes; m++) {
      const windowStart = start + m * MINUTE_MS;
      const isFull = m >= fullFrom;
      const batch: [string, Metrics][] = [];
      for (let d = 0; d < o.devices; d++) {
        if (!isFull && (d + m) % o.every !== 0) continue;
        // The first half of the fleet on the first version, the rest on the second.
        const v = VERSIONS[d < o.devices / 2 ? 0 : 1] as (typeof VERSIONS)[number];
        batch.push([deviceId(d), summary(random, v, windowStart, o.observations)]);
      }
      // Time moves on: the window closed a minute ago, and arrives now.
      clock = windowStart + MINUTE_MS + 1000;
      const phase = isFull ? full : sparse;
      const cpu0 = process.cpuUsage();
      const t0 = wallMs();
      const acks = batch.map(([id, msg]) => recorder.ingest(id, msg));
      recorder.flushNow();
      await Promise.all(acks);
      phase.wallMs += wallMs() - t0;
      const cpu = process.cpuUsage(cpu0);
      phase.cpuMs += (cpu.user + cpu.system) / 1000;
      phase.summaries += batch.length;
      if (m % 60 === 59) log(`hour ${(m + 1) / 60} of ${o.hours}: ${sparse.summaries + full.summaries} summaries`);
    }
    recorder.checkpoint();
    const stats = recorder.stats();
    const tables = tableBytes(file);
    const end = start + totalMinutes * MINUTE_MS;
    // Five devices of each version.
    const members = [...group];
    const tenDevices = [...members.slice(0, 5), ...members.slice(-5)];
    const time = (q: MetricsQuery) => {
      const samples: number[] = [];
      let rows = 0;
      let devices = 0;
      for (let i = 0; i < o.queryRuns; i++) {
        const t0 = wallMs();
        const r = recorder.query(q);
        samples.push(wallMs() - t0);
        rows = r.rows.length;
        devices = r.rows.reduce((a, b) => a + b.devices, 0);
      }
      return { ms: round(median(samples), 1), maxMs: round(Math.max(...samples), 1), rows, devices };
    };
    const lastHour = { since: new Date(end - HOUR_MS), until: new Date(end) };
    const all = { since: new Date(start), until: new Date(end) };
    const canaryGroup = { name: 'canary', members: group };
    const queries = {
      fleetByVersion1h: time({ model: MODEL, ...lastHour }),
      fleetByVersionAll: time({ model: MODEL, ...all }),
      fleetOneVersionAll: time({ model: MODEL, version: VERSIONS[1]?.version as string, ...all }),
      groupByVersion1h: time({ model: MODEL, group: canaryGroup, ...lastHour }),
      groupByVersionAll: time({ model: MODEL, group: canaryGroup, ...all }),
      fleetByDevice1h: time({ model: MODEL, by: 'device', ...lastHour }),
      groupByDevice1h: time({ model: MODEL, by: 'device', group: canaryGroup, ...lastHour }),
      tenDevices1h: time({ model: MODEL, devices: tenDevices, ...lastHour }),
      tenDevicesAll: time({ model: MODEL, devices: tenDevices, ...all }),
    };
    // Retention: keep the last half of the run (prune as if the retention ended mid-run).
    const pruneAt = new Date(start + Math.floor(o.hours / 2) * HOUR_MS + 14 * 86_400_000);
    const cpu0 = process.cpuUsage();
    const t0 = wallMs();
    const pruned = await recorder.prune(pruneAt);
    const pruneMs = wallMs() - t0;
    const pruneCpu = process.cpuUsage(cpu0);
    const summaries = sparse.summaries + full.summaries;
    const perPhase = (p: Phase) =>
      p.summaries === 0
        ? null
        : {
            summaries: p.summaries,
            perSecond: Math.round(p.summaries / (p.wallMs / 1000)),
            cpuMsPerSummary: round(p.cpuMs / p.summaries, 3),
          };
    return {
      benchmark: 'metrics',
      options: o,
      machine: machine(),
      revision: revision(),
      ingest: { sparse: perPhase(sparse), full: perPhase(full) },
      storage: {
        summaries,
        bytesPerSummary: Math.round((stats.bytes.file + stats.bytes.wal) / summaries),
        fileBytes: stats.bytes.file,
        rows: stats.rows,
        tables,
        rawBytesPerWindow: Math.round((tables.windows ?? 0) / Math.max(1, stats.rows.windows)),
      },
      queries,
      prune: {
        ms: round(pruneMs, 1),
        cpuMs: round((pruneCpu.user + pruneCpu.system) / 1000, 1),
        deleted: pruned,
      },
    };
  } finally {
    recorder.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** Bytes per table, its indexes included (SQLite's dbstat virtual table). */
function tableBytes(file: string): Record<string, number> {
  const db = new Database(file, { readonly: true });
  try {
    const rows = db.prepare('SELECT name, SUM(pgsize) AS bytes FROM dbstat GROUP BY name').all() as {
      name: string;
      bytes: number;
    }[];
    const out: Record<string, number> = {};
    for (const { name, bytes } of rows) {
      // An index counts with its table: sqlite_autoindex_windows_1, windows_by_start, ...
      const owner =
        ['windows', 'minute_rollups', 'device_hours'].find((t) => name === t || name.includes(t)) ?? 'other';
      out[owner] = (out[owner] ?? 0) + bytes;
    }
    return out;
  } finally {
    db.close();
  }
}

export function table(result: Awaited<ReturnType<typeof runMetricsBench>>): string {
  const lines: string[] = [];
  const row = (k: string, v: string | number) => lines.push(`${k.padEnd(44)} ${v}`);
  const { ingest, storage, queries, prune } = result;
  for (const [name, p] of Object.entries(ingest)) {
    if (!p) continue;
    row(`ingest (${name}) summaries`, p.summaries);
    row(`ingest (${name}) summaries/s`, p.perSecond);
    row(`ingest (${name}) CPU ms per summary`, p.cpuMsPerSummary);
  }
  row('bytes stored per summary (all tables)', storage.bytesPerSummary);
  row('bytes per raw window row (with its indexes)', storage.rawBytesPerWindow);
  row(
    'rows (windows / minute rollups / device hours)',
    `${storage.rows.windows} / ${storage.rows.minuteRollups} / ${storage.rows.deviceHours}`,
  );
  for (const [name, q] of Object.entries(queries))
    row(`query ${name} ms (max)`, `${q.ms} (${q.maxMs}), ${q.rows} rows, ${q.devices} devices`);
  row(
    'prune ms (rows deleted)',
    `${prune.ms} (${prune.deleted.windows + prune.deleted.minuteRollups + prune.deleted.deviceHours})`,
  );
  return lines.join('\n');
}

if (process.argv[1] && import.meta.url.endsWith(path.basename(process.argv[1]))) {
  const args = parseArgs(
    process.argv.slice(2),
    {
      devices: { default: 10_000, help: 'simulated devices' },
      hours: { default: 24, help: 'hours of summaries in all' },
      'full-hours': { default: 1, help: 'last hours in which every device reports every minute' },
      every: { default: 10, help: 'before those: each device reports every this many minutes' },
      group: { default: 1000, help: 'devices in the group queried' },
      observations: { default: 30, help: 'inferences per device and minute' },
      'query-runs': { default: 5, help: 'repetitions of each query (median reported)' },
      seed: { default: 1, help: 'PRNG seed' },
    },
    'npm run bench:metrics -- [options]',
  );
  const result = await runMetricsBench({
    devices: args.devices,
    hours: args.hours,
    fullHours: Math.min(args.hours, args['full-hours']),
    every: Math.max(1, args.every),
    groupSize: args.group,
    observations: args.observations,
    queryRuns: Math.max(1, args['query-runs']),
    seed: args.seed,
  });
  process.stderr.write(`${table(result)}\n`);
  printResult(result);
}
