import t from 'tap';
import { measureAnalysis } from '../coordinator/experiments/analysis-judge.js';
import { emptyMerged, type Merged } from '../coordinator/metrics/series.js';
import { validateAnalysis } from '../coordinator/rollout/analysis-spec.js';
import { decide } from '../coordinator/rollout/decide.js';
import { parseWaves, validateStrategy } from '../coordinator/rollout/strategy.js';
import { summarize } from '../coordinator/rollout/summary.js';
import type { Decision, Rollout, RolloutDevice, RolloutEvent } from '../coordinator/rollout/types.js';
import { RolloutSummarySchema } from '../shared/messages.js';
import { sketchOfValues } from '../shared/metrics/sketch.js';
import { rolloutRecord } from './helpers/rollout-record.js';

// Analysis gates in rollouts (docs/rollouts.md "Analysis gates"): the syntax, the file, what the
// engine does with each measurement, and the judge's measurement itself, all pure.

const T0 = Date.parse('2026-12-06T10:00:00.000Z');
const at = (s: number) => new Date(T0 + s * 1000).toISOString();
const ANALYSIS = {
  metrics: ['latency_ms p95 <= +10%'],
  bakeTime: '10m',
  measurements: 3,
  failureLimit: 1,
  minDevices: 3,
};

t.test('the --waves syntax and the analysis file', async (t) => {
  t.strictSame(parseWaves('5:analysis,25:manual,100'), [
    { percent: 5, approval: 'auto', analysis: true },
    { percent: 25, approval: 'manual' },
    { percent: 100, approval: 'auto' },
  ]);
  t.strictSame(parseWaves('5,25:manual:analysis,100')[1], { percent: 25, approval: 'manual', analysis: true });
  t.throws(() => parseWaves('5,100:analysis'), {
    code: 'E_STRATEGY',
    message: /the last wave cannot have an analysis gate/,
  });
  t.throws(() => parseWaves('5:analyse,100'), {
    message: /unknown flag "analyse": use ":manual", ":auto" or ":analysis"/,
  });
  t.throws(() => parseWaves('5:analysis:analysis,100'), { message: /gives ":analysis" twice/ });
  t.throws(() => parseWaves('5,25:manual:auto,100'), { message: /gives its approval twice/ });
  t.throws(() => validateStrategy({ waves: parseWaves('5:analysis,100') }), {
    message: /a wave has an analysis gate but no analysis says what to check: give --analysis FILE/,
  });
  t.throws(() => validateStrategy({ waves: parseWaves('5,100'), analysis: ANALYSIS }), {
    message: /--analysis is given but no wave has a gate/,
  });
  t.throws(() => validateStrategy({ waves: [{ percent: 5, analysis: 'yes' }, { percent: 100 }] }), {
    message: /analysis of wave 1 "yes" must be true or false/,
  });
  const strategy = validateStrategy({ waves: parseWaves('5:analysis,100'), analysis: ANALYSIS });
  t.strictSame(strategy.analysis, {
    metrics: ['latency_ms p95 <= +10%'],
    bakeTimeMs: 600_000,
    measurements: 3,
    failureLimit: 1,
    minDevices: 3,
    alpha: 0.05,
  });
  t.strictSame(validateStrategy(strategy), strategy, 'a stored strategy validates again unchanged');
  t.strictSame(validateAnalysis({ metrics: ['error_rate <= +1pp'], bakeTime: '1h' }), {
    metrics: ['error_rate <= +1pp'],
    bakeTimeMs: 3_600_000,
    measurements: 1,
    failureLimit: 0,
    minDevices: 5,
    alpha: 0.05,
  });
  const bad: [unknown, RegExp][] = [
    [[], /it must be a JSON object/],
    [{ ...ANALYSIS, wait: 1 }, /unknown field "wait"/],
    [{ ...ANALYSIS, metrics: 'latency_ms p95 <= +10%' }, /metrics must be a list of metric conditions/],
    [{ ...ANALYSIS, metrics: ['Latency p95 <= 1'] }, /"Latency" is neither latency_ms/],
    [{ ...ANALYSIS, bakeTime: '10 minutes' }, /bakeTime must be a duration such as 30m/],
    [{ ...ANALYSIS, bakeTime: '30s' }, /bakeTime must be from 1m to 7d/],
    [{ ...ANALYSIS, bakeTimeMs: 600_000 }, /give bakeTime or bakeTimeMs, not both/],
    [{ metrics: ['error_rate <= 0'], bakeTimeMs: 1.5 }, /bakeTimeMs must be whole milliseconds/],
    [{ ...ANALYSIS, measurements: 0 }, /measurements must be a whole number from 1 to 20, got 0/],
    [{ ...ANALYSIS, failureLimit: 3 }, /failureLimit must be a whole number from 0 to 2, got 3/],
    [{ ...ANALYSIS, minDevices: 2 }, /minDevices must be a whole number from 3/],
    [{ ...ANALYSIS, alpha: 0.5 }, /alpha must be in \(0, 0\.2\], got 0\.5/],
  ];
  for (const [value, why] of bad) t.throws(() => validateAnalysis(value), { code: 'E_EXPERIMENT_SPEC', message: why });
});

function rolloutOf(waves: string, analysis = ANALYSIS): Rollout {
  return rolloutRecord({
    id: 'r1',
    model: 'det',
    version: '2',
    strategy: validateStrategy({ waves: parseWaves(waves), maxFailureRate: 0, analysis }),
    createdAt: at(0),
  });
}

/** Applies decisions like the shell does. */
class Sim {
  clock = 0;
  constructor(
    public rollout: Rollout,
    public devices: RolloutDevice[],
  ) {}

  static started(waves: string, deviceWaves: number[]): Sim {
    const devices = deviceWaves.map(
      (wave, i): RolloutDevice => ({
        deviceId: `d${i}`,
        wave,
        state: 'pending',
        online: true,
        previousReleaseId: 'det@1',
        revertedTo: null,
        assignedAt: null,
        finishedAt: null,
        error: null,
      }),
    );
    const sim = new Sim(rolloutOf(waves), devices);
    sim.send({ type: 'start' });
    return sim;
  }

  send(event: RolloutEvent): Decision {
    const d = decide(this.rollout, this.devices, event, at(++this.clock));
    this.rollout = { ...this.rollout, ...d.patch };
    const byId = new Map(d.devices.map((x) => [x.deviceId, x]));
    this.devices = this.devices.map((x) => byId.get(x.deviceId) ?? x);
    return d;
  }

  healthy(wave: number): void {
    for (const d of this.devices.filter((x) => x.wave === wave)) {
      this.send({ type: 'report', deviceId: d.deviceId, state: 'healthy', version: '2', error: null });
    }
  }

  measurement(outcome: 'pass' | 'fail' | 'measured' | 'inconclusive', failed = outcome === 'fail'): Decision {
    return this.send({
      type: 'analysis',
      actor: 'coordinator',
      wave: this.rollout.currentWave,
      measurement: (this.rollout.analysis?.measurements ?? 0) + 1,
      outcome,
      failed,
      detail: `m ${outcome}`,
    });
  }
}

t.test('the engine: a completed gated wave bakes; pass goes on, fail halts, inconclusive waits', async (t) => {
  const sim = Sim.started('50:analysis,100', [0, 0, 1, 1]);
  sim.healthy(0);
  t.equal(sim.rollout.status, 'waiting_approval', 'the wave completed: the gate waits for its analysis');
  t.match(sim.rollout.analysis, { wave: 0, state: 'baking', measurements: 0, failures: 0, startedAt: at(3) });
  const summary = RolloutSummarySchema.parse(summarize(sim.rollout, sim.devices, at(3)));
  t.match(summary.analysis, { wave: 1, state: 'baking', maxMeasurements: 3, failureLimit: 1, bakeTimeMs: 600_000 });
  t.equal(summary.waves[0]?.analysis, true);

  const m1 = sim.measurement('measured', true);
  t.match(m1.audit, [{ action: 'rollout.analysis_measured', details: { measurement: 1, failures: 1 } }]);
  t.equal(sim.rollout.status, 'waiting_approval');
  const pass = sim.measurement('pass');
  t.match(
    pass.audit.map((a) => a.action),
    ['rollout.analysis_passed', 'rollout.wave_started'],
  );
  t.equal(sim.rollout.status, 'running');
  t.equal(sim.rollout.currentWave, 1);
  t.match(sim.rollout.analysis, { state: 'passed', measurements: 2, failures: 1, detail: 'm pass' });
  t.throws(() => sim.measurement('pass'), {
    code: 'E_ROLLOUT_STATE',
    message: /no analysis of wave 2 is in progress on rollout r1/,
  });

  // Fail: halted with the numbers; resume starts a new bake.
  const failing = Sim.started('50:analysis,100', [0, 0, 1, 1]);
  failing.healthy(0);
  const fail = failing.measurement('fail');
  t.equal(failing.rollout.status, 'halted');
  t.equal(failing.rollout.haltReason, 'analysis of wave 1 failed: m fail');
  t.match(fail.audit, [
    { action: 'rollout.halted', details: { manual: false, analysis: { wave: 1, measurement: 1 } } },
  ]);
  t.strictSame(fail.assignments, [], 'nothing assigned');
  failing.send({ type: 'resume', actor: 'alice' });
  t.equal(failing.rollout.status, 'waiting_approval', 'resumed: the wave bakes again');
  t.match(failing.rollout.analysis, { state: 'baking', measurements: 0, failures: 0 });

  // Inconclusive: waits for an operator; approve overrides and says so.
  const unsure = Sim.started('50:analysis,100', [0, 0, 1, 1]);
  unsure.healthy(0);
  unsure.measurement('inconclusive');
  t.equal(unsure.rollout.status, 'waiting_approval');
  t.equal(unsure.rollout.analysis?.state, 'inconclusive');
  t.throws(() => unsure.measurement('pass'), { message: /analysis of wave 1 inconclusive/ });
  const approved = unsure.send({ type: 'approve', actor: 'alice' });
  t.match(approved.audit[0], { action: 'rollout.approved', details: { analysis: 'inconclusive' } });
  t.equal(unsure.rollout.currentWave, 1);
});

t.test('the engine: a pass unlocks a manual gate with the evidence; promote skips analysis', async (t) => {
  const sim = Sim.started('50:analysis,75:manual,100', [0, 1, 2, 2]);
  sim.healthy(0);
  sim.measurement('pass');
  t.equal(sim.rollout.status, 'waiting_approval', 'the manual gate still waits for a person');
  t.equal(sim.rollout.currentWave, 0);
  t.equal(sim.rollout.analysis?.state, 'passed');
  const approved = sim.send({ type: 'approve', actor: 'alice' });
  t.notOk('analysis' in (approved.audit[0]?.details ?? {}), 'an approve after a pass overrides nothing');
  t.equal(sim.rollout.currentWave, 1);

  const promoted = Sim.started('50:analysis,100', [0, 0, 1, 1]);
  promoted.send({ type: 'promote', actor: 'alice' });
  promoted.healthy(0);
  t.equal(promoted.rollout.status, 'running', 'promoted: no analysis gate parks it');
  t.equal(promoted.rollout.currentWave, 1);
});

function deviceSeries(latencies: number[]): Merged {
  return { ...emptyMerged(), count: latencies.length, latencyMs: sketchOfValues(latencies) };
}

t.test('the judge measures the wave against the devices still on the previous version', async (t) => {
  const sim = Sim.started('50:analysis,100', [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
  sim.healthy(0);
  const r = sim.rollout;
  const started = Date.parse(r.analysis?.startedAt as string);
  const series = (factor: number) => (id: string) => {
    const i = Number(id.slice(1));
    const base = 10 + i; // devices differ
    const mine =
      i < 5 ? new Map([['2', deviceSeries(Array.from({ length: 50 }, (_, k) => base * factor + k / 10))]]) : null;
    return (
      mine ??
      new Map([
        ['1', deviceSeries(Array.from({ length: 50 }, (_, k) => base + 0.5 + k / 10))],
        ['0.9', deviceSeries([base])],
      ])
    );
  };
  t.equal(measureAnalysis(r, sim.devices, series(1), new Date(started + 599_000)), null, 'not before the bake time');
  const slow = measureAnalysis(r, sim.devices, series(3), new Date(started + 600_000));
  t.match(slow, {
    k: 1,
    outcome: 'measured',
    failed: true,
    candidate: { devices: 5, version: '2' },
    control: { devices: 5, version: '1' },
  });
  t.match(
    slow?.detail,
    /^measurement 1 of 3: wave 1 on 2 \(5 devices\) vs 5 devices on 1 over 10m: latency_ms p95 \+\d+\.\d% \[.*\], limit \+10\.0%: worse$/,
  );
  const last = {
    ...r,
    analysis: { ...(r.analysis as NonNullable<Rollout['analysis']>), measurements: 1, failures: 1 },
  };
  t.equal(
    measureAnalysis(last, sim.devices, series(3), new Date(started + 1_200_000))?.outcome,
    'fail',
    'over the failure limit',
  );
  const equal = measureAnalysis(
    {
      ...r,
      strategy: {
        ...r.strategy,
        analysis: {
          ...(r.strategy.analysis as NonNullable<Rollout['strategy']['analysis']>),
          metrics: ['latency_ms p95 <= +50%'],
        },
      },
    },
    sim.devices,
    series(1),
    new Date(started + 600_000),
  );
  t.equal(equal?.outcome, 'pass', equal?.detail ?? 'no measurement');
  const none = measureAnalysis(r, sim.devices, () => undefined, new Date(started + 600_000));
  t.match(none, { outcome: 'measured', failed: false });
  t.match(none?.detail, /too few reporting devices \(each side needs 3\)$/);
  const lastLook = { ...r, analysis: { ...(r.analysis as NonNullable<Rollout['analysis']>), measurements: 2 } };
  t.equal(
    measureAnalysis(lastLook, sim.devices, () => undefined, new Date(started + 1_800_000))?.outcome,
    'inconclusive',
  );
  t.equal(measureAnalysis({ ...r, analysis: null }, sim.devices, series(1), new Date(started + 600_000)), null);
});

t.test('the gate guards every later wave: an empty next wave does not let the ones after it through', async (t) => {
  // Wave 2 is empty (a small target cut finely): the analysis still comes before wave 3.
  const sim = Sim.started('10:analysis,20,100', [0, 2, 2, 2]);
  sim.healthy(0);
  t.equal(sim.rollout.status, 'waiting_approval');
  t.equal(sim.rollout.analysis?.state, 'baking');
  t.equal(sim.rollout.currentWave, 0, 'nothing after wave 1 started');
  sim.measurement('pass');
  t.equal(sim.rollout.currentWave, 2, 'on pass the empty wave passes and wave 3 starts');
  // Nothing after the gated wave: no bake, the rollout completes.
  const alone = Sim.started('50:analysis,100', [0, 0]);
  alone.healthy(0);
  t.equal(alone.rollout.status, 'completed');
  t.equal(alone.rollout.analysis ?? null, null);
});

t.test('an open analysis ends overridden by approve or promote, cancelled by halt or abort', async (t) => {
  for (const [event, state] of [
    [{ type: 'approve', actor: 'alice' }, 'overridden'],
    [{ type: 'promote', actor: 'alice' }, 'overridden'],
    [{ type: 'halt', actor: 'alice', reason: 'lunch' }, 'cancelled'],
    [{ type: 'abort', actor: 'alice', policy: 'keep' }, 'cancelled'],
  ] as const) {
    const sim = Sim.started('50:analysis,100', [0, 0, 1, 1]);
    sim.healthy(0);
    sim.send(event);
    t.equal(sim.rollout.analysis?.state, state, `${event.type}: ${state}`);
    t.equal(RolloutSummarySchema.parse(summarize(sim.rollout, sim.devices, at(9))).analysis?.state, state);
  }
  const resumed = Sim.started('50:analysis,100', [0, 0, 1, 1]);
  resumed.healthy(0);
  resumed.send({ type: 'halt', actor: 'alice', reason: 'lunch' });
  resumed.send({ type: 'resume', actor: 'alice' });
  t.equal(resumed.rollout.analysis?.state, 'baking', 'resume bakes again');
  t.throws(
    () =>
      resumed.send({
        type: 'analysis',
        actor: 'coordinator',
        wave: 0,
        measurement: 0,
        outcome: 'pass',
        failed: false,
        detail: 'again',
      }),
    { code: 'E_ROLLOUT_STATE', message: /measurement 0 of the analysis of wave 1 on rollout r1 was taken already/ },
  );
});

t.test('a finished rollout leaves alone a device another writer owns now', async (t) => {
  const rollout = { ...rolloutOf('50:analysis,100'), status: 'aborted' as const, abortPolicy: 'keep' as const };
  const device: RolloutDevice = {
    deviceId: 'd0',
    wave: 0,
    state: 'assigned',
    online: true,
    previousReleaseId: 'det@1',
    revertedTo: null,
    assignedAt: at(1),
    finishedAt: null,
    error: null,
  };
  const report: RolloutEvent = { type: 'report', deviceId: 'd0', state: 'rolled_back', version: '2', error: null };
  const free = decide(rollout, [device], report, at(5));
  t.strictSame(free.assignments, [{ deviceId: 'd0', kind: 'revert', releaseId: 'det@1' }], 'nobody owns it: set back');
  const owned = decide(rollout, [device], report, at(5), { ownedElsewhere: () => true });
  t.strictSame(owned.assignments, [], "an experiment owns it now: its desired state is the experiment's");
  t.match(owned.devices, [{ deviceId: 'd0', state: 'rolled_back' }], 'the outcome is still recorded');
});

t.test('after an outage the judge takes the latest measurement due, against one previous version', async (t) => {
  const sim = Sim.started('50:analysis,100', [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]);
  sim.healthy(0);
  const r = sim.rollout;
  const started = Date.parse(r.analysis?.startedAt as string);
  const seriesOf = (id: string) => {
    const i = Number(id.slice(1));
    const sample = (base: number) => deviceSeries(Array.from({ length: 40 }, (_, k) => base + k / 10));
    if (i < 5) return new Map([['2', sample(10 + i)]]);
    // d10 still runs an older version: left out, and said so.
    return new Map([[i === 10 ? '0.5' : '1', sample(10 + i)]]);
  };
  const m = measureAnalysis(r, sim.devices, seriesOf, new Date(started + 50 * 600_000));
  t.equal(m?.k, 3, 'the last of 3, not the first of the missed ones');
  t.match(
    m?.detail,
    /^measurement 3 of 3: wave 1 on 2 \(5 devices\) vs 5 devices on 1 \(1 on other versions left out\) over 8h20m/,
  );
});
