#!/usr/bin/env node
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { analysisCohort, measureAnalysis } from '../../coordinator/experiments/analysis-judge.js';
import { armOf } from '../../coordinator/experiments/assign.js';
import { compareArms } from '../../coordinator/experiments/compare.js';
import { parseMetricSpecs } from '../../coordinator/experiments/metric-spec.js';
import type { Experiment, ExperimentDevice } from '../../coordinator/experiments/types.js';
import { MetricsRecorder } from '../../coordinator/metrics/recorder.js';
import { parseWaves, validateStrategy } from '../../coordinator/rollout/strategy.js';
import type { Rollout, RolloutDevice } from '../../coordinator/rollout/types.js';
import { createLogger } from '../../shared/logger.js';
import type { Metrics } from '../../shared/messages.js';
import { DEFAULT_DISTRIBUTION, normal, simulatedSeries } from '../fleet-sim/metric-distributions.js';
import { mulberry32 } from '../mulberry32.js';
import { log, machine, median, parseArgs, printResult, revision, round, wallMs } from './common.js';

/**
 * `npm run bench:experiments`: what `otactl experiment compare` costs over a large, long
 * experiment, in-process on a fresh metrics.db in the temp directory, with simulated time.
 *
 * `--devices` devices (half in each arm by the experiment's hash; each device with its own median
 * latency, the candidate arm 10% slower) report `--hours` hours through the real ingest path
 * (MetricsRecorder.ingest, which also accumulates each device's cohort row). To keep a run short,
 * each device sends one summary per hour standing for that hour's 60 one-minute windows
 * (windowsMerged 60, as an agent's outbox merges windows after an outage) with `--observations`
 * inferences: a cohort row, the merge of a device's summaries since the start, has the bins a
 * day of one-minute windows gives (DDSketch bins are fixed by the range of values, not their
 * number), so compare reads what it would after a real day.
 *
 * Also: an analysis gate's measurement over a 9,000-device wave (gateDecision).
 *
 * Measured: the comparison as `experiment.compare` computes it (the cohort rows read from
 * metrics.db, then compareArms: per-device statistics, Hodges-Lehmann intervals, Mann-Whitney,
 * SRM), median and max of `--runs`; and ingest's CPU per summary with and without a cohort.
 * Prints a table on stderr and ONE JSON document on stdout.
 */

export interface ExperimentsBenchOptions {
  devices: number;
  hours: number;
  /** Hours of summaries behind the analysis gate's measurement. */
  gateHours: number;
  observations: number;
  runs: number;
  seed: number;
}

const MODEL = 'detector';
const HOUR_MS = 3_600_000;
const METRICS = ['latency_ms p95 <= +5%', 'latency_ms p50 <= +5%', 'confidence mean >= -0.02', 'error_rate <= +0.5pp'];
const deviceId = (i: number) => `dev-${String(i).padStart(5, '0')}`;

function experimentOf(start: number, devices: number): Experiment {
  return {
    id: 'exp-bench',
    model: MODEL,
    control: { version: '1.0.0', releaseId: `${MODEL}@1.0.0` },
    candidate: { version: '1.1.0', releaseId: `${MODEL}@1.1.0` },
    group: 'fleet',
    split: 50,
    metrics: parseMetricSpecs(METRICS),
    minDurationMs: HOUR_MS,
    minDevices: Math.min(10, Math.max(3, Math.floor(devices / 4))),
    alpha: 0.05,
    status: 'running',
    endReason: null,
    looksDone: 0,
    lastLook: null,
    promotedTo: null,
    createdBy: 'bench',
    startedAt: new Date(start).toISOString(),
    updatedAt: new Date(start).toISOString(),
    endedAt: null,
  };
}

export async function runExperimentsBench(o: ExperimentsBenchOptions) {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-bench-experiments-'));
  const start = Date.UTC(2030, 0, 1);
  let clock = start;
  const experiment = experimentOf(start, o.devices);
  const arms: ExperimentDevice[] = [];
  const medians: number[] = [];
  const random = mulberry32(o.seed);
  for (let i = 0; i < o.devices; i++) {
    const arm = armOf(experiment.id, deviceId(i), experiment.split);
    arms.push({ deviceId: deviceId(i), arm, previousReleaseId: null });
    const own = DEFAULT_DISTRIBUTION.medianMs * Math.exp(0.25 * normal(random));
    medians.push(arm === 'candidate' ? own * 1.1 : own);
  }
  const inCohort = [{ cohort: experiment.id, since: start }];
  const logger = createLogger('silent', process.stderr, 'ota-coordinator');
  const recorder = new MetricsRecorder({
    file: path.join(dir, 'metrics.db'),
    now: () => new Date(clock),
    logger,
    groupsOf: () => [],
    cohortsOf: () => inCohort,
  });
  const summaryOf = (i: number, windowStart: number): Metrics => {
    const a = arms[i] as ExperimentDevice;
    const version = a.arm === 'candidate' ? experiment.candidate.version : experiment.control.version;
    return {
      ts: new Date(windowStart + HOUR_MS).toISOString(),
      windowStart: new Date(windowStart).toISOString(),
      windowSeconds: 3600,
      windowsMerged: 60,
      series: [
        simulatedSeries(MODEL, version, o.observations, random, {
          ...DEFAULT_DISTRIBUTION,
          medianMs: medians[i] as number,
        }),
      ],
    } as Metrics;
  };
  try {
    let summaries = 0;
    let ingestCpuMs = 0;
    for (let h = 0; h < o.hours; h++) {
      const windowStart = start + h * HOUR_MS;
      const batch = Array.from({ length: o.devices }, (_, i) => summaryOf(i, windowStart));
      clock = windowStart + HOUR_MS + 1000;
      const cpu0 = process.cpuUsage();
      const acks = batch.map((m, i) => recorder.ingest(deviceId(i), m));
      recorder.flushNow();
      await Promise.all(acks);
      const cpu = process.cpuUsage(cpu0);
      ingestCpuMs += (cpu.user + cpu.system) / 1000;
      summaries += batch.length;
      if (h % 6 === 5) log(`hour ${h + 1} of ${o.hours}: ${summaries} summaries`);
    }
    recorder.checkpoint();
    const samples: number[] = [];
    let comparison: ReturnType<typeof compareArms> | null = null;
    let rows = 0;
    for (let r = 0; r < o.runs; r++) {
      const t0 = wallMs();
      const series = recorder.cohortSeries(experiment.id);
      comparison = compareArms({
        experiment,
        devices: arms,
        seriesOf: (id, version) => series.get(id)?.get(version) ?? null,
        now: new Date(clock),
      });
      samples.push(wallMs() - t0);
      rows = series.size;
    }
    const gate = await gateDecision(dir, o, start, logger);
    const ingestWithout = await ingestCost(dir, o, summaryOf, start, logger, false);
    const ingestWith = await ingestCost(dir, o, summaryOf, start, logger, true);
    const c = comparison as NonNullable<typeof comparison>;
    return {
      benchmark: 'experiments',
      options: o,
      machine: machine(),
      revision: revision(),
      summaries,
      ingestCpuMsPerSummary: round(ingestCpuMs / summaries, 3),
      compare: {
        ms: round(median(samples), 1),
        maxMs: round(Math.max(...samples), 1),
        cohortRows: rows,
        arms: { control: c.control.reporting, candidate: c.candidate.reporting },
        samples: c.control.samples + c.candidate.samples,
        metrics: c.metrics.map((m) => ({
          metric: m.metric,
          verdict: m.verdict,
          difference: m.difference
            ? {
                estimate: round(m.difference.estimate, 4),
                low: m.difference.low === null ? null : round(m.difference.low, 4),
                high: m.difference.high === null ? null : round(m.difference.high, 4),
              }
            : null,
        })),
      },
      gate,
      cohortIngestOverhead: {
        cpuMsPerSummaryWithout: ingestWithout,
        cpuMsPerSummaryWith: ingestWith,
      },
    };
  } finally {
    recorder.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/**
 * An analysis gate's decision over a 9,000-device wave (90% of `--devices`): the rollout's
 * devices report `--gate-hours` hours into a fresh store, the wave's on the candidate (10%
 * slower) and the rest on the previous version, through the real ingest path with the gate's
 * cohort; then the measurement as the judge takes it (cohort rows read, measureAnalysis).
 */
async function gateDecision(
  dir: string,
  o: ExperimentsBenchOptions,
  start: number,
  logger: ReturnType<typeof createLogger>,
) {
  const waveSize = Math.round(o.devices * 0.9);
  const strategy = validateStrategy({
    waves: parseWaves('90:analysis,100'),
    maxFailureRate: 0,
    analysis: { metrics: ['latency_ms p95 <= +5%', 'error_rate <= +0.5pp'], bakeTime: '1h', minDevices: 3 },
  });
  const startedAt = new Date(start).toISOString();
  const rollout: Rollout = {
    id: 'ro-bench',
    model: MODEL,
    version: '1.1.0',
    releaseId: `${MODEL}@1.1.0`,
    channel: 'stable',
    strategy,
    status: 'waiting_approval',
    currentWave: 0,
    acknowledgedFailures: 0,
    promoted: false,
    haltReason: null,
    abortPolicy: null,
    analysis: { wave: 0, state: 'baking', startedAt, measurements: 0, failures: 0, detail: null },
    createdBy: 'bench',
    createdAt: startedAt,
    updatedAt: startedAt,
  };
  const rows: RolloutDevice[] = Array.from({ length: o.devices }, (_, i) => ({
    deviceId: deviceId(i),
    wave: i < waveSize ? 0 : 1,
    state: i < waveSize ? 'healthy' : 'pending',
    online: true,
    previousReleaseId: `${MODEL}@1.0.0`,
    revertedTo: null,
    assignedAt: i < waveSize ? startedAt : null,
    finishedAt: i < waveSize ? startedAt : null,
    error: null,
  }));
  const cohort = analysisCohort(rollout.id, 0, startedAt);
  let clock = start;
  const recorder = new MetricsRecorder({
    file: path.join(dir, 'gate.db'),
    now: () => new Date(clock),
    logger,
    groupsOf: () => [],
    cohortsOf: () => [{ cohort, since: start }],
  });
  const random = mulberry32(o.seed + 1);
  try {
    for (let h = 0; h < o.gateHours; h++) {
      const windowStart = start + h * HOUR_MS;
      clock = windowStart + HOUR_MS + 1000;
      const acks = rows.map((d, i) =>
        recorder.ingest(d.deviceId, {
          ts: new Date(windowStart + HOUR_MS).toISOString(),
          windowStart: new Date(windowStart).toISOString(),
          windowSeconds: 3600,
          windowsMerged: 60,
          series: [
            simulatedSeries(MODEL, d.wave === 0 ? '1.1.0' : '1.0.0', o.observations, random, {
              ...DEFAULT_DISTRIBUTION,
              medianMs: DEFAULT_DISTRIBUTION.medianMs * (d.wave === 0 ? 1.1 : 1) * (1 + (i % 7) / 20),
            }),
          ],
        } as Metrics),
      );
      recorder.flushNow();
      await Promise.all(acks);
    }
    const samples: number[] = [];
    let m: ReturnType<typeof measureAnalysis> = null;
    const at = new Date(start + Math.max(1, o.gateHours) * HOUR_MS + 1000);
    for (let r = 0; r < o.runs; r++) {
      const t0 = wallMs();
      const series = recorder.cohortSeries(cohort);
      m = measureAnalysis(rollout, rows, (id) => series.get(id), at);
      samples.push(wallMs() - t0);
    }
    const measured = m as NonNullable<typeof m>;
    return {
      waveDevices: waveSize,
      controlDevices: o.devices - waveSize,
      ms: round(median(samples), 1),
      maxMs: round(Math.max(...samples), 1),
      outcome: measured.outcome,
      detail: measured.detail,
    };
  } finally {
    recorder.close();
  }
}

/** CPU per summary of one hour of the fleet into a fresh store, with or without a cohort. */
async function ingestCost(
  dir: string,
  o: ExperimentsBenchOptions,
  summaryOf: (i: number, windowStart: number) => Metrics,
  start: number,
  logger: ReturnType<typeof createLogger>,
  cohort: boolean,
): Promise<number> {
  const file = path.join(dir, `ingest-${cohort ? 'with' : 'without'}.db`);
  const recorder = new MetricsRecorder({
    file,
    now: () => new Date(start + HOUR_MS + 1000),
    logger,
    groupsOf: () => [],
    cohortsOf: () => (cohort ? [{ cohort: 'exp-bench', since: start }] : []),
  });
  try {
    const batch = Array.from({ length: o.devices }, (_, i) => summaryOf(i, start));
    const cpu0 = process.cpuUsage();
    const acks = batch.map((m, i) => recorder.ingest(deviceId(i), m));
    recorder.flushNow();
    await Promise.all(acks);
    const cpu = process.cpuUsage(cpu0);
    return round((cpu.user + cpu.system) / 1000 / batch.length, 3);
  } finally {
    recorder.close();
  }
}

export function table(result: Awaited<ReturnType<typeof runExperimentsBench>>): string {
  const lines: string[] = [];
  const row = (k: string, v: string | number) => lines.push(`${k.padEnd(48)} ${v}`);
  row('summaries ingested', result.summaries);
  row('ingest CPU ms per summary (with the cohort)', result.ingestCpuMsPerSummary);
  row('compare ms, median (max)', `${result.compare.ms} (${result.compare.maxMs})`);
  row('compare: cohort rows read', result.compare.cohortRows);
  row(
    'compare: reporting devices control / candidate',
    `${result.compare.arms.control} / ${result.compare.arms.candidate}`,
  );
  for (const m of result.compare.metrics) {
    const d = m.difference;
    row(`  ${m.metric}`, d ? `${m.verdict} ${d.estimate} [${d.low}, ${d.high}]` : m.verdict);
  }
  row(
    `analysis gate decision ms over a ${result.gate.waveDevices}-device wave, median (max)`,
    `${result.gate.ms} (${result.gate.maxMs}): ${result.gate.outcome}`,
  );
  row('  its measurement', result.gate.detail);
  row(
    'ingest CPU ms per summary: no cohort / one cohort',
    `${result.cohortIngestOverhead.cpuMsPerSummaryWithout} / ${result.cohortIngestOverhead.cpuMsPerSummaryWith}`,
  );
  return lines.join('\n');
}

if (process.argv[1] && import.meta.url.endsWith(path.basename(process.argv[1]))) {
  const args = parseArgs(
    process.argv.slice(2),
    {
      devices: { default: 10_000, help: 'devices in the experiment' },
      hours: { default: 24, help: 'hours the experiment has run' },
      'gate-hours': { default: 2, help: 'hours of summaries behind the analysis gate measured' },
      observations: { default: 120, help: 'inferences per device in each hourly summary' },
      runs: { default: 5, help: 'repetitions of compare (median reported)' },
      seed: { default: 1, help: 'PRNG seed' },
    },
    'npm run bench:experiments -- [options]',
  );
  const result = await runExperimentsBench({
    devices: args.devices,
    hours: Math.max(1, args.hours),
    gateHours: Math.max(1, args['gate-hours']),
    observations: Math.max(1, args.observations),
    runs: Math.max(1, args.runs),
    seed: args.seed,
  });
  process.stderr.write(`${table(result)}\n`);
  printResult(result);
}
