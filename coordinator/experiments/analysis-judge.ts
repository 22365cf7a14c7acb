import type { Logger } from '../../shared/logger.js';
import { emptyMerged, type Merged, mergeMerged } from '../metrics/series.js';
import { analysisMetrics } from '../rollout/analysis-spec.js';
import type { Rollout, RolloutDevice } from '../rollout/types.js';
import { evidenceOf, formatDuration, judgeMetric, type MetricResult } from './compare.js';
import { alphaForLook } from './stats/looks.js';

/**
 * The judge of analysis gates in rollouts (docs/rollouts.md "Analysis gates"): once a gated
 * wave completes, its devices on the candidate are compared with the target's devices still on
 * the previous version (those of the later waves) over the same window, from the wave's
 * completion on, with the experiments' method (compare.ts: devices are the unit,
 * Hodges-Lehmann intervals). Measurements are taken at bakeTime x 1, 2, ... up to
 * `measurements`, measurement k at the corrected level of look k (stats/looks.ts), so measuring
 * again does not inflate false failures. Pure: the rows and series in, a measurement out.
 */

export interface Measurement {
  /** The measurement's number, from 1. */
  k: number;
  outcome: 'pass' | 'fail' | 'measured' | 'inconclusive';
  /** A metric was significantly worse than its condition. */
  failed: boolean;
  detail: string;
  metrics: MetricResult[];
  candidate: { devices: number; version: string };
  control: { devices: number; version: string | null };
}

/** The cohort an analysis accumulates in metrics.db: one per rollout, wave and bake. */
export function analysisCohort(rolloutId: string, wave: number, startedAt: string): string {
  return `rollout:${rolloutId}:wave-${wave + 1}:${Date.parse(startedAt)}`;
}

/** When measurement `k` of the rollout's analysis is due. */
export function measurementDueAt(r: Rollout, k: number): number {
  const bake = r.strategy.analysis?.bakeTimeMs ?? 0;
  return Date.parse(r.analysis?.startedAt ?? '') + bake * k;
}

/**
 * The next measurement of a baking analysis gate, or null when none is due yet (or the rollout
 * has no baking analysis).
 */
export function measureAnalysis(
  r: Rollout,
  devices: Iterable<RolloutDevice>,
  seriesOf: (deviceId: string) => ReadonlyMap<string, Merged> | undefined,
  now: Date,
): Measurement | null {
  const a = r.analysis;
  const spec = r.strategy.analysis;
  if (!a || !spec || a.state !== 'baking') return null;
  // The latest measurement due: after a coordinator outage the ones missed are not taken back to
  // back on the same data, the schedule goes on from where the clock is (as experiments' looks do).
  const elapsed = now.getTime() - Date.parse(a.startedAt);
  const k = Math.min(spec.measurements, Math.floor(elapsed / spec.bakeTimeMs));
  if (k <= a.measurements) return null;
  const candidate: Merged[] = [];
  // Later-wave devices with what each still runs (its most observed version that is not the
  // candidate); the control is the devices on the most common one, so the candidate is compared
  // with one previous version, not a mix of several.
  const others: [string, Merged][] = [];
  const controlVersions = new Map<string, number>();
  for (const d of devices) {
    const versions = seriesOf(d.deviceId);
    if (!versions) continue;
    if (d.wave <= a.wave) {
      if (d.revertedTo) continue;
      const m = versions.get(r.version);
      if (m && m.count > 0) candidate.push(m);
    } else {
      let best: [string, Merged] | null = null;
      for (const [version, m] of versions) {
        if (version === r.version || m.count === 0) continue;
        if (!best || m.count > best[1].count) best = [version, m];
      }
      if (best) {
        others.push(best);
        controlVersions.set(best[0], (controlVersions.get(best[0]) ?? 0) + 1);
      }
    }
  }
  const controlVersion = [...controlVersions].sort((x, y) => y[1] - x[1] || (x[0] < y[0] ? -1 : 1))[0]?.[0] ?? null;
  const control = others.filter(([v]) => v === controlVersion).map(([, m]) => m);
  const otherVersions = others.length - control.length;
  const specs = analysisMetrics(spec);
  const level = 1 - 2 * alphaForLook(k, spec.alpha / specs.length);
  const merged = (list: Merged[]) => list.reduce(mergeMerged, emptyMerged());
  const controlMerged = merged(control);
  const candidateMerged = merged(candidate);
  const metrics = specs.map((s) => judgeMetric(s, control, candidate, controlMerged, candidateMerged, level));
  const enough = candidate.length >= spec.minDevices && control.length >= spec.minDevices;
  const failed = enough && metrics.some((m) => m.verdict === 'worse');
  const passed = enough && !failed && metrics.every((m) => m.meetsThreshold);
  const last = k >= spec.measurements;
  let outcome: Measurement['outcome'];
  if (failed) outcome = a.failures + 1 > spec.failureLimit ? 'fail' : last ? 'inconclusive' : 'measured';
  else if (passed) outcome = 'pass';
  else outcome = last ? 'inconclusive' : 'measured';
  const window = formatDuration(now.getTime() - Date.parse(a.startedAt));
  const head = `measurement ${k} of ${spec.measurements}: wave ${a.wave + 1} on ${r.version} (${candidate.length} devices) vs ${control.length} devices on ${controlVersion ?? 'the previous version'}${otherVersions > 0 ? ` (${otherVersions} on other versions left out)` : ''} over ${window}`;
  const body = enough
    ? metrics.map(evidenceOf).join('; ')
    : `too few reporting devices (each side needs ${spec.minDevices})`;
  return {
    k,
    outcome,
    failed,
    detail: `${head}: ${body}`,
    metrics,
    candidate: { devices: candidate.length, version: r.version },
    control: { devices: control.length, version: controlVersion },
  };
}

export interface AnalysisGatesDeps {
  /** Rollouts waiting at a baking analysis gate, with their rows (RolloutService.pendingAnalyses). */
  pending: () => { rollout: Rollout; devices: Iterable<RolloutDevice> }[];
  /** Commits a measurement (RolloutService.act with an `analysis` event). */
  record: (rolloutId: string, wave: number, m: Measurement) => void;
  cohortSeries: (cohort: string) => Map<string, Map<string, Merged>>;
  now: () => Date;
  logger?: Logger;
  onError?: (err: unknown, what: string) => void;
}

/** The shell: takes each due measurement and records it through the rollout engine. */
export class AnalysisGates {
  constructor(private readonly deps: AnalysisGatesDeps) {}

  tick(): Measurement[] {
    const taken: Measurement[] = [];
    for (const { rollout, devices } of this.deps.pending()) {
      try {
        const a = rollout.analysis;
        if (!a) continue;
        const now = this.deps.now();
        if (now.getTime() < measurementDueAt(rollout, a.measurements + 1)) continue;
        const series = this.deps.cohortSeries(analysisCohort(rollout.id, a.wave, a.startedAt));
        const m = measureAnalysis(rollout, devices, (id) => series.get(id), now);
        if (!m) continue;
        this.deps.record(rollout.id, a.wave, m);
        taken.push(m);
      } catch (err) {
        this.deps.onError?.(err, `the analysis of rollout ${rollout.id}`);
      }
    }
    return taken;
  }
}
