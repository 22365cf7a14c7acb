import t from 'tap';
import { type Comparison, compareArms, judgeMetric } from '../coordinator/experiments/compare.js';
import { parseMetricSpecs } from '../coordinator/experiments/metric-spec.js';
import { planLook } from '../coordinator/experiments/plan-experiment.js';
import type { Arm, Experiment, ExperimentDevice } from '../coordinator/experiments/types.js';
import {
  emptyMerged,
  type Merged,
  mergedOfSeries,
  mergeMerged,
  storedOfSeries,
} from '../coordinator/metrics/series.js';
import {
  DEFAULT_DISTRIBUTION,
  type Distribution,
  normal,
  simulatedSeries,
} from '../scripts/fleet-sim/metric-distributions.js';
import { mulberry32 } from '../scripts/mulberry32.js';

// Seeded, deterministic simulations of whole experiments through the real judge (compareArms and
// planLook, docs/experiments.md): devices draw their inferences from set distributions (the fleet
// simulator's, scripts/fleet-sim/metric-distributions.ts), accumulate them between planned looks,
// and the judge decides at each look as the coordinator would.

const UNIT_MS = 60_000; // the minimum duration: looks at 1, 2, 4, ... units
const START = Date.parse('2026-12-01T00:00:00.000Z');

interface Scenario {
  seed: number;
  devicesPerArm: number;
  metrics: string[];
  /** What the candidate arm's devices do: a factor on each device's median latency, a confidence shift. */
  candidate: { latencyFactor: number; errorRate?: number };
  looks: number;
  /** Observations per device per unit of time. */
  perUnit: number;
  /** Share of each arm's devices that report at all. */
  reporting?: Record<Arm, number>;
  split?: number;
  minDevices?: number;
  /** Sigma of each device's log median around the fleet's (devices differ: hardware, scenes); default 0.15. */
  heterogeneity?: number;
}

function experimentOf(s: Scenario): Experiment {
  return {
    id: `sim-${s.seed}`,
    model: 'det',
    control: { version: '1', releaseId: 'det@1' },
    candidate: { version: '2', releaseId: 'det@2' },
    group: 'g',
    split: s.split ?? 50,
    metrics: parseMetricSpecs(s.metrics),
    minDurationMs: UNIT_MS,
    minDevices: s.minDevices ?? 10,
    alpha: 0.05,
    status: 'running',
    endReason: null,
    looksDone: 0,
    lastLook: null,
    promotedTo: null,
    createdBy: 'sim',
    startedAt: new Date(START).toISOString(),
    updatedAt: new Date(START).toISOString(),
    endedAt: null,
  };
}

interface SimDevice {
  id: string;
  arm: Arm;
  reports: boolean;
  dist: Distribution;
  merged: Merged;
}

/** Devices differ from each other (hardware, scenes): each has its own median and error rate. */
function devicesOf(s: Scenario, random: () => number): SimDevice[] {
  const out: SimDevice[] = [];
  for (const arm of ['control', 'candidate'] as const) {
    for (let i = 0; i < s.devicesPerArm; i++) {
      const medianMs = DEFAULT_DISTRIBUTION.medianMs * Math.exp((s.heterogeneity ?? 0.15) * normal(random));
      const dist: Distribution = {
        ...DEFAULT_DISTRIBUTION,
        medianMs: arm === 'candidate' ? medianMs * s.candidate.latencyFactor : medianMs,
        errorRate: arm === 'candidate' && s.candidate.errorRate !== undefined ? s.candidate.errorRate : 0.01,
      };
      const share = s.reporting?.[arm] ?? 1;
      out.push({
        id: `${arm}-${i}`,
        arm,
        reports: i < Math.round(s.devicesPerArm * share),
        dist,
        merged: emptyMerged(),
      });
    }
  }
  return out;
}

interface Run {
  comparisons: Comparison[];
  halted: { look: number; comparison: Comparison; desired: number } | null;
  /** Looks at which a naive judge (95% intervals, no correction) would have halted. */
  naiveHalts: number;
  devices: SimDevice[];
  experiment: Experiment;
}

/** One experiment from the start to its last look (or its halt). */
function run(s: Scenario, options: { stopAtHalt?: boolean } = {}): Run {
  const random = mulberry32(s.seed);
  const devices = devicesOf(s, random);
  const arms: ExperimentDevice[] = devices.map((d) => ({ deviceId: d.id, arm: d.arm, previousReleaseId: 'det@1' }));
  let experiment = experimentOf(s);
  const version = (arm: Arm) => (arm === 'control' ? '1' : '2');
  const comparisons: Comparison[] = [];
  let halted: Run['halted'] = null;
  let naiveHalts = 0;
  let elapsedUnits = 0;
  for (let k = 1; k <= s.looks; k++) {
    const until = 2 ** (k - 1);
    for (const d of devices) {
      if (!d.reports) continue;
      const series = simulatedSeries('det', version(d.arm), s.perUnit * (until - elapsedUnits), random, d.dist);
      d.merged = mergeMerged(d.merged, mergedOfSeries(storedOfSeries(series), series.count, series.errors, 1));
    }
    elapsedUnits = until;
    const now = new Date(START + until * UNIT_MS);
    const byId = new Map(devices.map((d) => [d.id, d]));
    const comparison = compareArms({
      experiment,
      devices: arms,
      seriesOf: (id, v) => {
        const d = byId.get(id);
        return d?.reports && version(d.arm) === v ? d.merged : null;
      },
      now,
    });
    comparisons.push(comparison);
    // The same data judged naively: every metric at 95% at every look, no correction.
    const reporting = (arm: Arm) => devices.filter((d) => d.arm === arm && d.reports).map((d) => d.merged);
    const naive = experiment.metrics.map((spec) =>
      judgeMetric(spec, reporting('control'), reporting('candidate'), emptyMerged(), emptyMerged(), 0.95),
    );
    if (naive.some((m) => m.verdict === 'worse')) naiveHalts++;
    const decided = planLook(experiment, arms, comparison, now.toISOString());
    if (!decided) continue;
    experiment = decided.experiment;
    if (decided.halted && !halted) {
      halted = { look: k, comparison, desired: decided.plan.desired.length };
      if (options.stopAtHalt !== false) break;
    }
  }
  return { comparisons, halted, naiveHalts, devices, experiment };
}

const GUARDRAILS = ['latency_ms p95 <= +10%', 'confidence mean >= -0.02', 'error_rate <= +0.5pp'];

t.test(
  'a candidate 20% slower at p95 is judged worse, the true difference inside the interval, and halted',
  async (t) => {
    const r = run({
      seed: 1,
      devicesPerArm: 100,
      metrics: GUARDRAILS,
      candidate: { latencyFactor: 1.2 },
      looks: 6,
      perUnit: 20,
    });
    t.ok(r.halted, 'the judge halted the experiment');
    const halt = r.halted as NonNullable<Run['halted']>;
    const p95 = halt.comparison.metrics.find((m) => m.metric === 'latency_ms p95');
    t.equal(p95?.verdict, 'worse');
    const d = p95?.difference;
    t.ok(d && d.low !== null && d.high !== null && d.low <= 0.2 && 0.2 <= d.high, `0.2 in [${d?.low}, ${d?.high}]`);
    t.ok(d && Math.abs(d.estimate - 0.2) < 0.06, `estimate ${d?.estimate} near +20%`);
    t.equal(halt.desired, 100, 'every candidate device is sent back to the control release');
    t.equal(r.experiment.status, 'halted');
    t.match(
      r.experiment.endReason,
      /^guardrail breached: latency_ms p95 \+\d+\.\d% \[\+\d+\.\d%, \+\d+\.\d%\], limit \+10\.0%: worse/,
    );
    t.equal(
      halt.comparison.metrics.find((m) => m.metric === 'error_rate')?.verdict,
      'inconclusive',
      'the other metrics are not blamed',
    );
    const later = r.comparisons.at(-1) as Comparison;
    t.equal(
      planLook(r.experiment, [], { ...later, look: { ...later.look, index: later.look.index + 5 } }, later.at),
      null,
      'an ended experiment is never looked at again',
    );
  },
);

t.test('an equal candidate is inconclusive on every metric and never halted', async (t) => {
  const r = run({
    seed: 2,
    devicesPerArm: 100,
    metrics: GUARDRAILS,
    candidate: { latencyFactor: 1 },
    looks: 6,
    perUnit: 20,
  });
  t.equal(r.halted, null);
  const last = r.comparisons.at(-1) as Comparison;
  t.equal(last.look.index, 6);
  t.strictSame(
    last.metrics.map((m) => m.verdict),
    ['inconclusive', 'inconclusive', 'inconclusive'],
  );
  const p95 = last.metrics[0];
  t.ok(
    p95?.difference && (p95.difference.low as number) < 0 && 0 < (p95.difference.high as number),
    'the interval holds 0',
  );
  t.ok(p95?.meetsThreshold, 'and lies within the +10% limit');
  t.equal(r.experiment.looksDone, 6);
  t.equal(r.experiment.lastLook?.outcome, 'continue');
});

t.test('200 A/A experiments with 8 looks each: the false-alarm rate stays under alpha', async (t) => {
  // Zero thresholds, so that any significant difference in the bad direction halts: the
  // strictest case for false alarms. A naive judge on the same data shows the looks do inflate.
  const metrics = ['latency_ms p95 <= +0%', 'confidence mean >= -0', 'error_rate <= +0pp'];
  let halted = 0;
  let naive = 0;
  for (let seed = 1000; seed < 1200; seed++) {
    const r = run(
      { seed, devicesPerArm: 20, metrics, candidate: { latencyFactor: 1 }, looks: 8, perUnit: 2 },
      { stopAtHalt: false },
    );
    if (r.halted) halted++;
    if (r.naiveHalts > 0) naive++;
  }
  t.comment(`A/A: ${halted}/200 halted by the judge, ${naive}/200 by a naive judge`);
  t.ok(halted / 200 <= 0.05, `judge's false-alarm rate ${halted / 200} <= alpha 0.05`);
  t.ok(
    naive / 200 > 0.05,
    `a naive judge exceeds alpha on the same data (${naive / 200}): the simulation can see inflation`,
  );
});

t.test('a 60/40 reporting skew on a 50/50 split trips SRM, and no automatic decision is taken', async (t) => {
  const r = run({
    seed: 3,
    devicesPerArm: 500,
    metrics: ['latency_ms p95 <= +10%'],
    candidate: { latencyFactor: 1.3 },
    looks: 1,
    perUnit: 10,
    reporting: { control: 1, candidate: 2 / 3 },
  });
  const c = r.comparisons[0] as Comparison;
  t.strictSame([c.control.reporting, c.candidate.reporting], [500, 333]);
  t.ok(c.srm.flagged, `SRM flagged (p = ${c.srm.p})`);
  t.ok(c.srm.p < 0.001);
  t.equal(c.metrics[0]?.verdict, 'worse', 'the metric alone would halt');
  t.equal(r.halted, null, 'but nothing is decided while the sample ratio is off');
  t.equal(r.experiment.lastLook?.outcome, 'srm');
  t.match(r.experiment.lastLook?.detail, /sample ratio mismatch: 500\/333 devices report against a 50\/50 split/);
  // The same fleet reporting evenly is not flagged.
  const even = run({
    seed: 3,
    devicesPerArm: 500,
    metrics: ['latency_ms p95 <= +10%'],
    candidate: { latencyFactor: 1 },
    looks: 1,
    perUnit: 10,
  });
  t.notOk(even.comparisons[0]?.srm.flagged);
});

t.test('no automatic decision before the minimum device count', async (t) => {
  const r = run({
    seed: 4,
    devicesPerArm: 8,
    metrics: ['latency_ms p95 <= +10%'],
    candidate: { latencyFactor: 2 },
    looks: 3,
    perUnit: 20,
    minDevices: 10,
  });
  t.equal(r.halted, null);
  t.equal(r.experiment.lastLook?.outcome, 'not_ready');
  t.match(r.experiment.lastLook?.detail, /reporting devices control 8, candidate 8: each arm needs 10/);
  t.equal(r.comparisons.at(-1)?.metrics[0]?.verdict, 'worse', 'though the comparison shows it');
});
