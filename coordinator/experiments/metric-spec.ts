import { OtaError } from '../../shared/errors.js';
import { CONFIDENCE_BINS, VALUE_NAME_PATTERN } from '../../shared/metrics/limits.js';
import { mean, quantile } from '../../shared/metrics/sketch.js';
import type { Merged } from '../metrics/series.js';
import type { MetricSpec, MetricStat } from './types.js';

/**
 * The `--metric` language of experiments and analysis gates (docs/experiments.md):
 *
 *   METRIC [STAT] (<= | >=) THRESHOLD
 *
 *   latency_ms p95 <= +10%        the candidate's p95 may be at most 10% above the control's
 *   confidence mean >= -0.02      its mean confidence may be at most 0.02 below
 *   error_rate <= +0.5pp          its error rate may be at most 0.5 percentage points above
 *   iou p50 >= -5%                a custom value (docs/metrics.md, `metrics.values`)
 *
 * `<=` means lower is better, `>=` higher is better. A threshold is relative (`%`, to the
 * control), in percentage points (`pp`, for rates and confidence), or absolute (a plain number in
 * the metric's unit). Pure.
 */

export const MAX_METRICS = 8;
const EXAMPLES =
  "e.g. --metric 'latency_ms p95 <= +10%' --metric 'confidence mean >= -0.02' --metric 'error_rate <= +0.5pp'";
const QUANTILE_STATS: readonly MetricStat[] = ['p50', 'p90', 'p95', 'p99', 'mean'];
const SPEC =
  /^\s*([A-Za-z][A-Za-z0-9_]*)(?:\s+([A-Za-z0-9]+))?\s*(<=|>=)\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*(%|pp)?\s*$/;

function fail(text: string, why: string): never {
  throw new OtaError('E_EXPERIMENT_SPEC', `metric "${text}": ${why}; ${EXAMPLES}`);
}

export function parseMetricSpec(text: string): MetricSpec {
  const m = SPEC.exec(text);
  if (!m) fail(text, 'write METRIC [STAT] <= or >= THRESHOLD (a number, +N%, or +Npp)');
  const [, name = '', statText, op, numberText = '', unit] = m;
  const number = Number(numberText);
  if (!Number.isFinite(number)) fail(text, `threshold ${numberText} is not a number`);
  let metric: MetricSpec['metric'];
  let stat: MetricStat;
  let valueName: string | null = null;
  const lowerStat = statText?.toLowerCase();
  if (name === 'latency_ms') {
    metric = 'latency_ms';
    if (lowerStat === undefined || !QUANTILE_STATS.includes(lowerStat as MetricStat))
      fail(text, `latency_ms needs a statistic: one of ${QUANTILE_STATS.join(', ')}`);
    stat = lowerStat as MetricStat;
  } else if (name === 'confidence') {
    metric = 'confidence';
    if (lowerStat !== undefined && lowerStat !== 'mean')
      fail(text, 'confidence is compared by its mean (write `confidence mean`)');
    stat = 'mean';
  } else if (name === 'error_rate') {
    metric = 'error_rate';
    if (lowerStat !== undefined) fail(text, 'error_rate takes no statistic (write `error_rate <= +0.5pp`)');
    stat = 'rate';
  } else {
    if (!VALUE_NAME_PATTERN.test(name))
      fail(
        text,
        `"${name}" is neither latency_ms, confidence, error_rate nor a custom value name (lowercase, from a letter)`,
      );
    metric = 'value';
    valueName = name;
    if (lowerStat === undefined || !QUANTILE_STATS.includes(lowerStat as MetricStat))
      fail(text, `a custom value needs a statistic: one of ${QUANTILE_STATS.join(', ')}`);
    stat = lowerStat as MetricStat;
  }
  let threshold: MetricSpec['threshold'];
  if (unit === '%') {
    // Relative thresholds compare per-device values on a log scale (compare.ts): a device's error
    // rate is often exactly 0, which has no logarithm.
    if (metric === 'error_rate') fail(text, 'give an error rate threshold in percentage points, e.g. +0.5pp');
    threshold = { kind: 'relative', value: number / 100 };
  } else if (unit === 'pp') {
    if (metric !== 'error_rate' && metric !== 'confidence')
      fail(text, 'percentage points (pp) apply to error_rate and confidence only: use % or a plain number');
    threshold = { kind: 'absolute', value: number / 100 };
  } else {
    threshold = { kind: 'absolute', value: number };
  }
  const direction = op === '<=' ? 'lower_is_better' : 'higher_is_better';
  return {
    text: `${name}${metric === 'error_rate' ? '' : ` ${stat}`} ${op} ${numberText.startsWith('+') || numberText.startsWith('-') ? '' : '+'}${numberText}${unit ?? ''}`,
    metric,
    valueName,
    stat,
    direction,
    threshold,
  };
}

/** Parses every `--metric`; at least one, at most MAX_METRICS, no two alike. */
export function parseMetricSpecs(texts: readonly string[]): MetricSpec[] {
  if (texts.length === 0) throw new OtaError('E_EXPERIMENT_SPEC', `give at least one --metric: ${EXAMPLES}`);
  if (texts.length > MAX_METRICS)
    throw new OtaError('E_EXPERIMENT_SPEC', `at most ${MAX_METRICS} metrics (got ${texts.length})`);
  const specs = texts.map(parseMetricSpec);
  const seen = new Set<string>();
  for (const s of specs) {
    const key = `${s.metric}:${s.valueName ?? ''}:${s.stat}`;
    if (seen.has(key)) throw new OtaError('E_EXPERIMENT_SPEC', `metric "${s.text}" is given twice: keep one`);
    seen.add(key);
  }
  return specs;
}

/** The metric's name as shown (`latency_ms p95`, `error_rate`, `iou p50`). */
export function metricLabel(s: MetricSpec): string {
  const name = s.metric === 'value' ? (s.valueName as string) : s.metric;
  return s.metric === 'error_rate' ? name : `${name} ${s.stat}`;
}

function sketchStat(sketch: Merged['latencyMs'] | undefined, stat: MetricStat): number | null {
  if (!sketch || sketch.count === 0) return null;
  if (stat === 'mean') return mean(sketch);
  return quantile(sketch, Number(stat.slice(1)) / 100);
}

/**
 * The metric of one device (or one arm's merged series): null when it has no observation of it.
 * Confidence is a mean over 10 bins of width 0.1 (docs/metrics.md): each bin counts at its
 * middle, so a device's mean is within 0.05 of its true mean; both arms carry the same rounding,
 * so the difference between arms is what the bins blur, not shift.
 */
export function statOf(spec: MetricSpec, m: Merged): number | null {
  switch (spec.metric) {
    case 'latency_ms':
      return sketchStat(m.latencyMs, spec.stat);
    case 'error_rate':
      return m.count > 0 ? m.errors / m.count : null;
    case 'confidence': {
      if (!m.confidence) return null;
      let n = 0;
      let sum = 0;
      for (let i = 0; i < CONFIDENCE_BINS; i++) {
        const c = m.confidence[i] ?? 0;
        n += c;
        sum += c * ((i + 0.5) / CONFIDENCE_BINS);
      }
      return n > 0 ? sum / n : null;
    }
    case 'value':
      return sketchStat(m.values.get(spec.valueName as string), spec.stat);
  }
}
