import t from 'tap';
import { armOf } from '../coordinator/experiments/assign.js';
import { judgeMetric } from '../coordinator/experiments/compare.js';
import { metricLabel, parseMetricSpec, parseMetricSpecs, statOf } from '../coordinator/experiments/metric-spec.js';
import { planExperimentCreate, planExperimentEnd } from '../coordinator/experiments/plan-experiment.js';
import { emptyMerged, type Merged } from '../coordinator/metrics/series.js';
import { sketchOfValues } from '../shared/metrics/sketch.js';

t.test('metric specs: what each one means', async (t) => {
  t.match(parseMetricSpec('latency_ms p95 <= +10%'), {
    text: 'latency_ms p95 <= +10%',
    metric: 'latency_ms',
    stat: 'p95',
    direction: 'lower_is_better',
    threshold: { kind: 'relative', value: 0.1 },
  });
  t.match(parseMetricSpec('confidence mean >= -0.02'), {
    text: 'confidence mean >= -0.02',
    metric: 'confidence',
    direction: 'higher_is_better',
    threshold: { kind: 'absolute', value: -0.02 },
  });
  t.match(parseMetricSpec('confidence >= -2pp'), { stat: 'mean', threshold: { kind: 'absolute', value: -0.02 } });
  const err = parseMetricSpec('error_rate <= +0.5pp');
  t.equal(err.text, 'error_rate <= +0.5pp');
  t.equal(err.stat, 'rate');
  t.ok(Math.abs(err.threshold.value - 0.005) < 1e-15);
  t.match(parseMetricSpec('  iou   P50>=-5% '), {
    text: 'iou p50 >= -5%',
    metric: 'value',
    valueName: 'iou',
    stat: 'p50',
  });
  t.match(parseMetricSpec('latency_ms mean <= 3'), {
    text: 'latency_ms mean <= +3',
    threshold: { kind: 'absolute', value: 3 },
  });
  t.equal(metricLabel(parseMetricSpec('error_rate <= 0.01')), 'error_rate');
  t.equal(metricLabel(parseMetricSpec('iou p95 >= -1')), 'iou p95');
});

t.test('metric specs: every mistake is named, with an example', async (t) => {
  const cases: [string, RegExp][] = [
    ['latency_ms p95 < 10%', /write METRIC \[STAT\] <= or >= THRESHOLD/],
    ['latency_ms <= +10%', /latency_ms needs a statistic: one of p50, p90, p95, p99, mean/],
    ['latency_ms p42 <= +10%', /latency_ms needs a statistic/],
    ['confidence p95 >= -0.02', /confidence is compared by its mean/],
    ['error_rate mean <= +0.5pp', /error_rate takes no statistic/],
    ['error_rate <= +5%', /give an error rate threshold in percentage points/],
    ['latency_ms p95 <= +5pp', /percentage points \(pp\) apply to error_rate and confidence only/],
    ['Boxes p95 <= +5%', /"Boxes" is neither latency_ms, confidence, error_rate nor a custom value name/],
    ['iou <= +5%', /a custom value needs a statistic/],
  ];
  for (const [text, why] of cases) {
    t.throws(() => parseMetricSpec(text), { code: 'E_EXPERIMENT_SPEC', message: why }, text);
    t.throws(() => parseMetricSpec(text), { message: /e\.g\. --metric 'latency_ms p95 <= \+10%'/ });
  }
  t.throws(() => parseMetricSpecs([]), { code: 'E_EXPERIMENT_SPEC', message: /give at least one --metric/ });
  t.throws(() => parseMetricSpecs(Array.from({ length: 9 }, (_, i) => `latency_ms mean <= +${i}%`)), {
    message: /at most 8 metrics \(got 9\)/,
  });
  t.throws(() => parseMetricSpecs(['latency_ms p95 <= +10%', 'latency_ms p95 <= +20%']), {
    message: /metric "latency_ms p95 <= \+20%" is given twice/,
  });
});

t.test('a device statistic from its merged series', async (t) => {
  const latencies = Array.from({ length: 1000 }, (_, i) => 1 + i / 10);
  const m: Merged = {
    ...emptyMerged(),
    count: 1000,
    errors: 25,
    latencyMs: sketchOfValues(latencies),
    confidence: [0, 0, 0, 0, 0, 0, 0, 0, 500, 500],
    values: new Map([['iou', sketchOfValues([0.5, 0.5, 0.5])]]),
  };
  const p95 = statOf(parseMetricSpec('latency_ms p95 <= +10%'), m) as number;
  t.ok(Math.abs(p95 - 95.9) / 95.9 < 0.02, `p95 ${p95} within the sketch's accuracy`);
  t.ok(Math.abs((statOf(parseMetricSpec('latency_ms mean <= +10%'), m) as number) - 50.95) < 1e-9, 'mean exact');
  t.equal(statOf(parseMetricSpec('error_rate <= +1pp'), m), 0.025);
  t.ok(Math.abs((statOf(parseMetricSpec('confidence mean >= -0.02'), m) as number) - 0.9) < 1e-12, 'bin middles');
  t.ok(Math.abs((statOf(parseMetricSpec('iou p50 >= -5%'), m) as number) - 0.5) < 0.01);
  t.equal(statOf(parseMetricSpec('boxes p50 >= -5%'), m), null, 'a value the device never sent');
  const empty = emptyMerged();
  for (const spec of ['latency_ms p95 <= +10%', 'error_rate <= +1pp', 'confidence mean >= 0']) {
    t.equal(statOf(parseMetricSpec(spec), empty), null, `${spec}: no observation, no value`);
  }
  t.equal(statOf(parseMetricSpec('confidence mean >= 0'), { ...empty, confidence: new Array(10).fill(0) }), null);
});

t.test('arms: a stable hash of (experiment, device) at the split', async (t) => {
  t.equal(armOf('exp-1', 'cam-1', 50), armOf('exp-1', 'cam-1', 50), 'stable');
  const ids = Array.from({ length: 10_000 }, (_, i) => `cam-${i}`);
  for (const split of [10, 50, 90]) {
    const candidates = ids.filter((id) => armOf('exp-1', id, split) === 'candidate').length;
    // Binomial(10,000, split%): 5 standard deviations at most.
    const sd = Math.sqrt(10_000 * (split / 100) * (1 - split / 100));
    t.ok(Math.abs(candidates - split * 100) < 5 * sd, `split ${split}: ${candidates} candidates`);
  }
  const a = ids.filter((id) => armOf('exp-1', id, 50) === 'candidate');
  const b = new Set(ids.filter((id) => armOf('exp-2', id, 50) === 'candidate'));
  const both = a.filter((id) => b.has(id)).length;
  t.ok(Math.abs(both - 2500) < 5 * Math.sqrt(10_000 * 0.25 * 0.75), `independent across experiments (${both} in both)`);
  t.equal(armOf('exp-1', 'constructor', 100), 'candidate');
  t.equal(armOf('exp-1', 'constructor', 0), 'control');
});

t.test('create: every refusal names the problem and the fix', async (t) => {
  const snapshot = {
    release: (id: string) => (id === 'det@1' || id === 'det@2' ? { eligible: true as const } : null),
    idTaken: false,
    deviceIds: Array.from({ length: 40 }, (_, i) => `cam-${i}`),
    ownersOf: () => [] as string[],
    desiredBefore: () => 'det@1',
  };
  const input = {
    id: 'exp-1',
    model: 'det',
    control: '1',
    candidate: '2',
    group: 'cams',
    split: 50,
    metrics: ['latency_ms p95 <= +10%'],
  };
  const now = '2026-12-06T00:00:00.000Z';
  const ok = planExperimentCreate(input, snapshot, 'alice', now);
  t.equal(ok.experiment.minDurationMs, 30 * 60_000, 'default minimum duration 30m');
  t.equal(ok.experiment.minDevices, 10);
  t.equal(ok.experiment.alpha, 0.05);
  const candidates = ok.devices.filter((d) => d.arm === 'candidate').map((d) => d.deviceId);
  t.strictSame(
    ok.plan.desired.map((d) => d.deviceId).sort(),
    candidates.sort(),
    'only the devices whose release changes get a new desired state',
  );
  t.match(ok.plan.audit[0], {
    action: 'experiment.created',
    actor: 'alice',
    details: { arms: { candidate: candidates.length } },
  });

  const refuse = (patch: object, snap: object, code: string, why: RegExp) =>
    t.throws(() => planExperimentCreate({ ...input, ...patch }, { ...snapshot, ...snap }, 'alice', now), {
      code,
      message: why,
    });
  refuse(
    { split: 0 },
    {},
    'E_EXPERIMENT_SPEC',
    /--split 0: give the candidate arm's percent of the group, a whole number from 1 to 99/,
  );
  refuse({ split: 12.5 }, {}, 'E_EXPERIMENT_SPEC', /--split 12\.5/);
  refuse({ candidate: '1' }, {}, 'E_EXPERIMENT_SPEC', /control and candidate are both 1/);
  refuse({ minDurationMs: 59_000 }, {}, 'E_EXPERIMENT_SPEC', /--min-duration must be from 1m/);
  refuse({ minDevices: 2 }, {}, 'E_EXPERIMENT_SPEC', /--min-devices must be a whole number of at least 3/);
  refuse({ alpha: 0.5 }, {}, 'E_EXPERIMENT_SPEC', /--alpha must be in \(0, 0\.2\]/);
  refuse({ candidate: '3' }, {}, 'E_NOT_FOUND', /no release det@3 \(the candidate\): publish it first/);
  refuse(
    {},
    {
      release: (id: string) => (id === 'det@2' ? { eligible: false, reason: 'revoked by key k' } : { eligible: true }),
    },
    'E_RELEASE_REVOKED',
    /revoked by key k/,
  );
  refuse({}, { idTaken: true }, 'E_CONFLICT', /the id exp-1 is taken/);
  refuse({}, { deviceIds: [] }, 'E_NOT_FOUND', /group cams has no devices/);
  refuse(
    {},
    { ownersOf: (id: string) => (id === 'cam-3' ? ['rollout ro-9'] : []) },
    'E_CONFLICT',
    /1 device\(s\) of group cams are owned by an active rollout or running experiment of det: cam-3 \(in rollout ro-9\); finish, abort or stop it first/,
  );
  refuse(
    { split: 1 },
    { deviceIds: ['cam-0'] },
    'E_EXPERIMENT_SPEC',
    /a 99\/1 split of group cams's 1 device\(s\) puts none in the (candidate|control) arm/,
  );
});

t.test('ends: a revoked control is never assigned again, a removed device is skipped', async (t) => {
  const { experiment, devices } = planExperimentCreate(
    {
      id: 'exp-1',
      model: 'det',
      control: '1',
      candidate: '2',
      group: 'cams',
      split: 50,
      metrics: ['latency_ms p95 <= +10%'],
    },
    {
      release: () => ({ eligible: true }),
      idTaken: false,
      deviceIds: Array.from({ length: 20 }, (_, i) => `cam-${i}`),
      ownersOf: () => [],
      desiredBefore: () => 'det@1',
    },
    'alice',
    '2026-12-06T00:00:00.000Z',
  );
  const candidates = devices.filter((d) => d.arm === 'candidate').map((d) => d.deviceId);
  const goneId = candidates[0] as string;
  const end = planExperimentEnd(
    experiment,
    devices,
    {
      status: 'stopped',
      revert: true,
      reason: 'r',
      actor: 'alice',
      comparison: null,
      controlRevoked: 'key k revoked',
      exists: (id) => id !== goneId,
    },
    '2026-12-06T01:00:00.000Z',
  );
  t.strictSame(
    end.plan.desired,
    candidates.slice(1).map((deviceId) => ({ kind: 'remove', deviceId, model: 'det' })),
    'the entries go: the agents keep what they run',
  );
  t.match(end.plan.audit[0]?.details, {
    revertedDevices: candidates.length - 1,
    removedDevices: 1,
    controlRevoked: 'key k revoked',
  });
  t.throws(
    () =>
      planExperimentCreate(
        {
          id: 'exp-2',
          model: 'det',
          control: '1',
          candidate: '2',
          group: 'cams',
          split: 50,
          metrics: ['error_rate <= 0'],
          minDurationMs: 366 * 86_400_000,
        },
        {
          release: () => ({ eligible: true }),
          idTaken: false,
          deviceIds: ['a', 'b', 'c', 'd'],
          ownersOf: () => [],
          desiredBefore: () => null,
        },
        'alice',
        '2026-12-06T00:00:00.000Z',
      ),
    { code: 'E_EXPERIMENT_SPEC', message: /--min-duration must be from 1m .* to 365d/ },
  );
});

t.test('a relative threshold leaves out devices whose value is 0, and says how many', async (t) => {
  const device = (latencies: number[]): Merged => ({
    ...emptyMerged(),
    count: latencies.length,
    latencyMs: sketchOfValues(latencies),
  });
  const control = Array.from({ length: 8 }, (_, i) => device([10 + i, 11 + i, 12 + i]));
  const candidate = [
    ...Array.from({ length: 8 }, (_, i) => device([30 + i, 31 + i, 32 + i])),
    device([0, 0, 0]),
    device([0, 0, 0]),
  ];
  const r = judgeMetric(
    parseMetricSpec('latency_ms p50 <= +10%'),
    control,
    candidate,
    emptyMerged(),
    emptyMerged(),
    0.95,
  );
  t.equal(r.verdict, 'worse', 'the others still decide');
  t.strictSame(r.devices, { control: 8, candidate: 8 });
  t.equal(
    r.note,
    '2 device(s) left out: a value of 0 or less has no ratio to compare (use an absolute threshold to count them)',
  );
  const few = judgeMetric(
    parseMetricSpec('latency_ms p50 <= +10%'),
    control.slice(0, 2),
    candidate,
    emptyMerged(),
    emptyMerged(),
    0.95,
  );
  t.match(
    few.note,
    /too few devices with a value \(control 2, candidate 8; at least 3 each\); 2 left out for a value of 0 or less/,
  );
});
