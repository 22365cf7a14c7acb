import { parseDuration } from '../../shared/duration.js';
import { OtaError } from '../../shared/errors.js';
import { parseMetricSpecs } from '../experiments/metric-spec.js';
import type { MetricSpec } from '../experiments/types.js';

/**
 * What a metric gate in a rollout checks (`--waves 5:analysis,25,100 --analysis FILE`,
 * docs/rollouts.md "Analysis gates"), like Argo Rollouts' AnalysisTemplate: the metrics and their
 * conditions, how long the wave bakes before the first measurement, how many measurements at
 * most, and how many failed measurements are tolerated. The file:
 *
 *   { "metrics": ["latency_ms p95 <= +10%", "error_rate <= +0.5pp"],
 *     "bakeTime": "30m", "measurements": 3, "failureLimit": 0, "minDevices": 5, "alpha": 0.05 }
 *
 * Stored normalized (bakeTimeMs, every default filled in), and validated again when read.
 */
export interface AnalysisSpec {
  metrics: string[];
  bakeTimeMs: number;
  measurements: number;
  failureLimit: number;
  minDevices: number;
  alpha: number;
}

export const MAX_MEASUREMENTS = 20;
const EXAMPLE = 'e.g. {"metrics": ["latency_ms p95 <= +10%"], "bakeTime": "30m", "measurements": 3, "failureLimit": 0}';
const KEYS = new Set(['metrics', 'bakeTime', 'bakeTimeMs', 'measurements', 'failureLimit', 'minDevices', 'alpha']);

function fail(message: string): never {
  throw new OtaError('E_EXPERIMENT_SPEC', `analysis: ${message}; ${EXAMPLE}`);
}

function wholeNumber(value: unknown, name: string, min: number, max: number, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    fail(`${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return value;
}

function bakeTimeOf(record: Record<string, unknown>): number {
  const { bakeTime, bakeTimeMs } = record;
  if (bakeTime !== undefined && bakeTimeMs !== undefined) fail('give bakeTime or bakeTimeMs, not both');
  let ms: number;
  if (bakeTimeMs !== undefined) {
    if (typeof bakeTimeMs !== 'number' || !Number.isInteger(bakeTimeMs)) fail('bakeTimeMs must be whole milliseconds');
    ms = bakeTimeMs;
  } else {
    const parsed = typeof bakeTime === 'string' ? parseDuration(bakeTime) : null;
    if (parsed === null) fail(`bakeTime must be a duration such as 30m, 2h or 90s, got ${JSON.stringify(bakeTime)}`);
    ms = parsed;
  }
  if (ms < 60_000 || ms > 7 * 86_400_000)
    fail(`bakeTime must be from 1m to 7d (a summary window is a minute), got ${ms} ms`);
  return ms;
}

/** Checks an untrusted analysis (command payload, stored row) and returns it normalized. */
export function validateAnalysis(value: unknown): AnalysisSpec {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail('it must be a JSON object');
  const record = value as Record<string, unknown>;
  for (const key of Object.keys(record)) {
    if (!KEYS.has(key))
      fail(`unknown field "${key}" (known: metrics, bakeTime, measurements, failureLimit, minDevices, alpha)`);
  }
  if (!Array.isArray(record.metrics) || !record.metrics.every((m) => typeof m === 'string')) {
    fail('metrics must be a list of metric conditions');
  }
  const metrics = parseMetricSpecs(record.metrics as string[]).map((s) => s.text);
  const measurements = wholeNumber(record.measurements, 'measurements', 1, MAX_MEASUREMENTS, 1);
  const failureLimit = wholeNumber(record.failureLimit, 'failureLimit', 0, measurements - 1, 0);
  const minDevices = wholeNumber(record.minDevices, 'minDevices', 3, 100_000, 5);
  const alpha = record.alpha ?? 0.05;
  if (typeof alpha !== 'number' || !(alpha > 0 && alpha <= 0.2))
    fail(`alpha must be in (0, 0.2], got ${JSON.stringify(alpha)}`);
  return { metrics, bakeTimeMs: bakeTimeOf(record), measurements, failureLimit, minDevices, alpha };
}

export function analysisMetrics(spec: AnalysisSpec): MetricSpec[] {
  return parseMetricSpecs(spec.metrics);
}
