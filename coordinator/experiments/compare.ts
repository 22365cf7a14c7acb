import { quantile } from '../../shared/metrics/sketch.js';
import { emptyMerged, type Merged, mergeMerged } from '../metrics/series.js';
import { metricLabel, statOf } from './metric-spec.js';
import { alphaForLook, lookIndexAt, lookTimeMs } from './stats/looks.js';
import { hodgesLehmann, mannWhitney } from './stats/rank-tests.js';
import { type SrmCheck, srmCheck } from './stats/srm.js';
import type { Arm, Experiment, ExperimentDevice, MetricSpec } from './types.js';

/**
 * The comparison of an experiment's arms (docs/experiments.md, "How arms are compared"). Pure:
 * the arms' per-device series in, the numbers and verdicts out.
 *
 * The device is the unit. Each device contributes one value per metric (its own p95 latency from
 * its merged sketch, its error rate, its mean confidence), and the arms are compared over those
 * values with a rank method: the Hodges-Lehmann shift (the median of all candidate-minus-control
 * differences) with its distribution-free confidence interval, and the Mann-Whitney test it
 * inverts (Kayenta's judge does the same). Samples are never pooled across devices as if they
 * were independent: one busy device would otherwise decide the verdict alone. Relative
 * thresholds (`+10%`) compare the logarithms of the device values, so the shift is a ratio
 * (`exp(shift) - 1`), exact for a candidate that multiplies every device's latency by the same
 * factor.
 *
 * Repeated looks: the interval's level is corrected for the planned look the experiment has
 * reached (stats/looks.ts: looks at minDuration x 1, 2, 4, ... and alpha_k = alpha * 6 / (pi^2
 * k^2)) and for the number of metrics (Bonferroni), so the chance that an A/A experiment is ever
 * halted stays at or under alpha however long it runs (test/experiment-simulation.test.ts).
 */

export type Verdict = 'better' | 'worse' | 'inconclusive';

export interface ArmView {
  arm: Arm;
  version: string;
  /** Devices assigned to the arm. */
  devices: number;
  /** Devices with at least one observation of the arm's version since the start. */
  reporting: number;
  samples: number;
  errors: number;
  /** Quantiles of the arm's merged latency sketch (all its devices' inferences), for charts; null without samples. */
  latencyMs: { p50: number; p90: number; p95: number; p99: number; max: number } | null;
  /** The arm's confidence counts per bin of width 0.1 over [0, 1]; null when none was reported. */
  confidence: number[] | null;
}

export interface MetricResult {
  /** The spec as written (`latency_ms p95 <= +10%`). */
  spec: string;
  /** `latency_ms p95`. */
  metric: string;
  direction: MetricSpec['direction'];
  threshold: MetricSpec['threshold'];
  /** The arm's value from its merged series (quantiles from the merged sketch). */
  control: number | null;
  candidate: number | null;
  /** Devices that contributed a value, per arm. */
  devices: { control: number; candidate: number };
  /**
   * Candidate minus control across devices (relative: a fraction of the control), with its
   * interval at `level`; null bounds: too few devices for an interval at this level.
   */
  difference: { kind: 'relative' | 'absolute'; estimate: number; low: number | null; high: number | null } | null;
  /** Two-sided Mann-Whitney p-value of the device values (uncorrected, for reading). */
  p: number | null;
  /** `worse`: significantly beyond the threshold; `better`: significantly better than the control. */
  verdict: Verdict;
  /** The whole interval is on the allowed side of the threshold. */
  meetsThreshold: boolean;
  /** Why the verdict could not be reached, when it could not. */
  note: string | null;
}

export interface Comparison {
  experiment: string;
  model: string;
  status: Experiment['status'];
  at: string;
  elapsedMs: number;
  /** The planned look reached (0 before the minimum duration) and the interval level it allows. */
  look: { index: number; level: number; nextAt: string };
  control: ArmView;
  candidate: ArmView;
  srm: SrmCheck;
  /** Whether an automatic decision may be taken now; if not, why. */
  ready: boolean;
  notReady: string[];
  metrics: MetricResult[];
}

export interface CompareInput {
  experiment: Experiment;
  devices: readonly ExperimentDevice[];
  /** The device's merged series of its arm's version since the start, or null when it sent none. */
  seriesOf: (deviceId: string, version: string) => Merged | null;
  now: Date;
}

/** Fewer devices per arm than this and no verdict is given, whatever the level. */
export const MIN_DEVICES_FOR_VERDICT = 3;

/** The look index used for intervals: the planned look reached, at least the first. */
export function lookLevel(e: Experiment, elapsedMs: number): { index: number; level: number } {
  const index = lookIndexAt(Math.max(0, elapsedMs), e.minDurationMs);
  // One-sided error of each verdict at a look: (1 - level) / 2 = alpha_k / metrics.
  const level = 1 - 2 * alphaForLook(Math.max(1, index), e.alpha / Math.max(1, e.metrics.length));
  return { index, level };
}

export function compareArms(input: CompareInput): Comparison {
  const { experiment: e } = input;
  // An ended experiment is read as it stood when it ended: its elapsed time and look level do
  // not keep growing (a halt's `worse` must not read `inconclusive` a week later).
  const now = e.status !== 'running' && e.endedAt ? new Date(e.endedAt) : input.now;
  const elapsedMs = now.getTime() - Date.parse(e.startedAt);
  const { index, level } = lookLevel(e, elapsedMs);
  const arms: Record<Arm, { version: string; devices: number; series: Merged[] }> = {
    control: { version: e.control.version, devices: 0, series: [] },
    candidate: { version: e.candidate.version, devices: 0, series: [] },
  };
  for (const d of input.devices) {
    const arm = arms[d.arm];
    arm.devices++;
    const m = input.seriesOf(d.deviceId, arm.version);
    if (m && m.count > 0) arm.series.push(m);
  }
  const mergedOf = (arm: Arm) => arms[arm].series.reduce(mergeMerged, emptyMerged());
  const merged = { control: mergedOf('control'), candidate: mergedOf('candidate') };
  const view = (arm: Arm): ArmView => {
    const a = arms[arm];
    const m = merged[arm];
    const q = (p: number) => quantile(m.latencyMs, p) as number;
    return {
      arm,
      version: a.version,
      devices: a.devices,
      reporting: a.series.length,
      samples: m.count,
      errors: m.errors,
      latencyMs:
        m.latencyMs.count === 0 ? null : { p50: q(0.5), p90: q(0.9), p95: q(0.95), p99: q(0.99), max: m.latencyMs.max },
      confidence: m.confidence ? [...m.confidence] : null,
    };
  };
  const control = view('control');
  const candidate = view('candidate');
  const srm = srmCheck([control.reporting, candidate.reporting], [(100 - e.split) / 100, e.split / 100]);
  const notReady: string[] = [];
  if (elapsedMs < e.minDurationMs) {
    notReady.push(`running for ${formatDuration(elapsedMs)} of the minimum ${formatDuration(e.minDurationMs)}`);
  }
  if (control.reporting < e.minDevices || candidate.reporting < e.minDevices) {
    notReady.push(
      `reporting devices control ${control.reporting}, candidate ${candidate.reporting}: each arm needs ${e.minDevices}`,
    );
  }
  if (srm.flagged) {
    notReady.push(
      `sample ratio mismatch: ${control.reporting}/${candidate.reporting} devices report against a ${100 - e.split}/${e.split} split (p = ${srm.p.toExponential(1)} < 0.001); find why an arm's devices do not report before trusting any verdict`,
    );
  }
  const metrics = e.metrics.map((spec) =>
    judgeMetric(spec, arms.control.series, arms.candidate.series, merged.control, merged.candidate, level),
  );
  return {
    experiment: e.id,
    model: e.model,
    status: e.status,
    at: now.toISOString(),
    elapsedMs,
    look: {
      index,
      level,
      nextAt: new Date(Date.parse(e.startedAt) + lookTimeMs(index + 1, e.minDurationMs)).toISOString(),
    },
    control,
    candidate,
    srm,
    ready: notReady.length === 0,
    notReady,
    metrics,
  };
}

function values(spec: MetricSpec, series: readonly Merged[]): number[] {
  const out: number[] = [];
  for (const m of series) {
    const v = statOf(spec, m);
    if (v !== null && Number.isFinite(v)) out.push(v);
  }
  return out;
}

export function judgeMetric(
  spec: MetricSpec,
  controlSeries: readonly Merged[],
  candidateSeries: readonly Merged[],
  controlMerged: Merged,
  candidateMerged: Merged,
  level: number,
): MetricResult {
  const relative = spec.threshold.kind === 'relative';
  // A relative threshold compares logarithms: a device whose value is 0 or less (a latency timed
  // in whole milliseconds, a custom value that is often 0) has none, and is left out with a note
  // rather than silencing the metric for every device.
  const usable = (v: number) => !relative || v > 0;
  const allX = values(spec, candidateSeries);
  const allY = values(spec, controlSeries);
  const x = allX.filter(usable);
  const y = allY.filter(usable);
  const left = allX.length - x.length + (allY.length - y.length);
  const result: MetricResult = {
    spec: spec.text,
    metric: metricLabel(spec),
    direction: spec.direction,
    threshold: spec.threshold,
    control: statOf(spec, controlMerged),
    candidate: statOf(spec, candidateMerged),
    devices: { control: y.length, candidate: x.length },
    difference: null,
    p: null,
    verdict: 'inconclusive',
    meetsThreshold: false,
    note:
      left > 0
        ? `${left} device(s) left out: a value of 0 or less has no ratio to compare (use an absolute threshold to count them)`
        : null,
  };
  if (x.length < MIN_DEVICES_FOR_VERDICT || y.length < MIN_DEVICES_FOR_VERDICT) {
    result.note = `too few devices with a value (control ${y.length}, candidate ${x.length}; at least ${MIN_DEVICES_FOR_VERDICT} each)${left > 0 ? `; ${left} left out for a value of 0 or less` : ''}`;
    return result;
  }
  const a = relative ? x.map(Math.log) : x;
  const b = relative ? y.map(Math.log) : y;
  const shift = hodgesLehmann(a, b, level);
  result.p = mannWhitney(a, b).p;
  const scale = (v: number) => (relative ? Math.expm1(v) : v);
  const low = shift.low === null ? null : scale(shift.low);
  const high = shift.high === null ? null : scale(shift.high);
  result.difference = { kind: spec.threshold.kind, estimate: scale(shift.estimate), low, high };
  if (low === null || high === null) {
    result.note = `too few devices for an interval at level ${level.toFixed(4)} (control ${y.length}, candidate ${x.length})`;
    return result;
  }
  const t = spec.threshold.value;
  if (spec.direction === 'lower_is_better') {
    result.meetsThreshold = high <= t;
    result.verdict = low > t ? 'worse' : high < 0 ? 'better' : 'inconclusive';
  } else {
    result.meetsThreshold = low >= t;
    result.verdict = high < t ? 'worse' : low > 0 ? 'better' : 'inconclusive';
  }
  return result;
}

/** `1h30m`, `45s`: how long, as an operator reads it. */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  const d = Math.floor(s / 86_400);
  const h = Math.floor((s % 86_400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const parts = [d ? `${d}d` : '', h ? `${h}h` : '', m ? `${m}m` : '', sec && !d && !h ? `${sec}s` : ''];
  return parts.join('') || '0s';
}

/** A difference as an operator reads it: `+21.3%`, `+0.62pp`, `-0.031`. */
export function formatDifference(v: number, spec: { metric: string; threshold: MetricSpec['threshold'] }): string {
  const sign = v >= 0 ? '+' : '-';
  const abs = Math.abs(v);
  if (spec.threshold.kind === 'relative') return `${sign}${(abs * 100).toFixed(1)}%`;
  if (spec.metric === 'error_rate') return `${sign}${(abs * 100).toFixed(2)}pp`;
  return `${sign}${abs.toPrecision(3)}`;
}

/**
 * One metric's evidence in a line (audit, promote, halt): `latency_ms p95 +21.3% [+15.2%, +27.9%],
 * limit +10.0%: worse`.
 */
export function evidenceOf(r: MetricResult): string {
  if (!r.difference) return `${r.metric}: ${r.verdict} (${r.note ?? 'no data'})`;
  const fmt = (v: number | null) => (v === null ? '?' : formatDifference(v, r));
  return `${r.metric} ${fmt(r.difference.estimate)} [${fmt(r.difference.low)}, ${fmt(r.difference.high)}], limit ${formatDifference(r.threshold.value, r)}: ${r.verdict}`;
}
