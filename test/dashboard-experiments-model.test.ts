import t from 'tap';
import {
  type Comparison,
  formatDifference as coordinatorDifference,
  formatDuration as coordinatorDuration,
  type MetricResult,
} from '../coordinator/experiments/compare.js';
import type { ExperimentStatusResult, ExperimentView } from '../coordinator/experiments/experiment-service.js';
import {
  confidenceChart,
  confidenceShares,
  formatMs,
  intervalGeometry,
  latencyChart,
  niceStep,
  valueAxis,
} from '../dashboard/src/experiment-charts.js';
import {
  ACTION_OPS,
  armDevices,
  type ComparisonRow,
  changesExperiments,
  DEFAULT_PROMOTE_FORM,
  describeStop,
  type ExperimentRow,
  type ExperimentStatusRow,
  estimateText,
  experimentActions,
  experimentDevicePage,
  formatDifference,
  formatDuration,
  formatValue,
  intervalText,
  isExperimentEvent,
  lastLookText,
  levelText,
  limitText,
  type MetricRow,
  needsComparison,
  otherNotReady,
  promoteBlockers,
  promotePlan,
  pText,
  sortExperimentDevices,
  sortedExperiments,
  splitText,
  srmLine,
  verdictSymbol,
} from '../dashboard/src/experiments.js';
import { FleetState } from '../dashboard/src/fleet-state.js';
import { stateLabel, stateSymbol } from '../dashboard/src/format.js';
import { Poller } from '../dashboard/src/poller.js';
import type { Timers } from '../dashboard/src/render-batcher.js';
import { formatRoute, parseRoute, VIEWS } from '../dashboard/src/router.js';

// The experiment view's pure modules (no DOM): the numbers and words it shows, which actions it
// offers, what they send, the charts' geometry and the poller that refreshes it. The browser test
// (dashboard-experiments-e2e) checks the same on screen against a real coordinator.

// The page's copies of the command results' shapes must accept what the coordinator sends: these
// assignments fail `npm run typecheck` when a result changes shape under the page.
export const resultShapes = {
  experiment: (r: ExperimentView): ExperimentRow => r,
  status: (r: ExperimentStatusResult): ExperimentStatusRow => r,
  comparison: (r: Comparison): ComparisonRow => r,
  metric: (r: MetricResult): MetricRow => r,
};

const T0 = '2026-12-06T10:00:00.000Z';

function experiment(overrides: Partial<ExperimentRow> = {}): ExperimentRow {
  return {
    id: 'exp-1',
    model: 'det',
    status: 'running',
    control: '1.4.0',
    candidate: '1.5.0',
    group: 'cams',
    split: 30,
    arms: { control: 7, candidate: 3 },
    metrics: ['latency_ms p95 <= +10%'],
    minDurationMs: 1_800_000,
    minDevices: 10,
    alpha: 0.05,
    startedAt: T0,
    endedAt: null,
    endReason: null,
    looksDone: 0,
    lastLook: null,
    nextLookAt: null,
    promotedTo: null,
    createdBy: 'alice',
    ...overrides,
  };
}

function metric(overrides: Partial<MetricRow> = {}): MetricRow {
  return {
    spec: 'latency_ms p95 <= +10%',
    metric: 'latency_ms p95',
    direction: 'lower_is_better',
    threshold: { kind: 'relative', value: 0.1 },
    control: 10,
    candidate: 30,
    devices: { control: 12, candidate: 12 },
    difference: { kind: 'relative', estimate: 2, low: 1.6, high: 2.3 },
    p: 0.00004,
    verdict: 'worse',
    meetsThreshold: false,
    note: null,
    ...overrides,
  };
}

function comparison(overrides: Partial<ComparisonRow> = {}): ComparisonRow {
  const arm = (a: 'control' | 'candidate', version: string) => ({
    arm: a,
    version,
    devices: 12,
    reporting: 12,
    samples: 600,
    errors: 6,
    latencyMs: { p50: 10, p90: 16, p95: 18, p99: 22.5, max: 40 },
    confidence: [0, 0, 0, 0, 0, 0, 0, 10, 30, 60],
  });
  return {
    experiment: 'exp-1',
    model: 'det',
    status: 'running',
    at: T0,
    elapsedMs: 7_000,
    look: { index: 0, level: 0.9797, nextAt: T0 },
    control: arm('control', '1.4.0'),
    candidate: arm('candidate', '1.5.0'),
    srm: { observed: [12, 12], expected: [12, 12], chi2: 0, p: 1, flagged: false },
    ready: false,
    notReady: ['running for 7s of the minimum 30m'],
    metrics: [metric()],
    ...overrides,
  };
}

t.test('routes: the experiments list and an experiment, any id round-trips', async (t) => {
  t.same(parseRoute('#/experiments'), { view: 'experiments' });
  t.same(parseRoute('#/experiments/'), { view: 'experiments' });
  t.same(parseRoute('#/experiments/exp-1'), { view: 'experiment', id: 'exp-1' });
  for (const id of ['constructor', '__proto__', 'exp.1', 'a b/c?d#e']) {
    const route = { view: 'experiment' as const, id };
    t.same(parseRoute(formatRoute(route)), route, `${id} round-trips`);
  }
  t.equal(formatRoute({ view: 'experiment', id: 'a/b' }), '#/experiments/a%2Fb');
  t.equal(formatRoute({ view: 'experiments' }), '#/experiments');
  t.ok(VIEWS.includes('experiments'), 'in the navigation');
  t.equal(VIEWS.indexOf('experiments'), VIEWS.indexOf('rollouts') + 1, 'after the rollouts');
});

t.test('the experiment statuses read as a word and a symbol', async (t) => {
  for (const s of ['running', 'halted', 'stopped', 'promoted']) t.not(stateSymbol(s), '•', `${s} has a symbol`);
  t.equal(stateLabel('not_ready'), 'not ready');
});

t.test('the list: running first, then the newest; split, last look, audit events', async (t) => {
  const list = [
    experiment({ id: 'old', status: 'stopped', startedAt: '2026-12-01T00:00:00.000Z' }),
    experiment({ id: 'new', status: 'halted', startedAt: '2026-12-05T00:00:00.000Z' }),
    experiment({ id: 'run-b', startedAt: '2026-12-02T00:00:00.000Z' }),
    experiment({ id: 'run-a', startedAt: '2026-12-02T00:00:00.000Z' }),
    experiment({ id: 'constructor', startedAt: '2026-12-03T00:00:00.000Z' }),
  ];
  t.same(
    sortedExperiments(list).map((e) => e.id),
    ['constructor', 'run-a', 'run-b', 'new', 'old'],
  );
  t.equal(list[0]?.id, 'old', 'the input is left alone');
  t.equal(splitText(experiment()), '70/30 · 7 / 3');
  t.equal(lastLookText(experiment()), 'none yet');
  t.equal(
    lastLookText(experiment({ lastLook: { look: 2, at: T0, outcome: 'not_ready', detail: 'x' } })),
    '2: not ready',
  );
  t.ok(isExperimentEvent({ subject: 'experiment:constructor' }, 'constructor'));
  t.notOk(isExperimentEvent({ subject: 'experiment:constructor2' }, 'constructor'));
  t.notOk(isExperimentEvent({ subject: null }, 'constructor'));
  t.ok(changesExperiments({ action: 'experiment.look' }));
  t.notOk(changesExperiments({ action: 'rollout.created' }));
});

t.test("numbers read as otactl experiment compare writes them (the coordinator's own formatters)", async (t) => {
  for (const ms of [0, 499, 1000, 45_000, 60_000, 61_000, 3_600_000, 5_430_000, 86_400_000, 90_061_000]) {
    t.equal(formatDuration(ms), coordinatorDuration(ms), `${ms} ms: ${formatDuration(ms)}`);
  }
  const specs = [
    { metric: 'latency_ms p95', threshold: { kind: 'relative' as const, value: 0.1 } },
    { metric: 'error_rate', threshold: { kind: 'absolute' as const, value: 0.005 } },
    { metric: 'confidence mean', threshold: { kind: 'absolute' as const, value: -0.02 } },
  ];
  for (const spec of specs) {
    for (const v of [0, 0.1, -0.031, 2.004, -0.00062, 1e-9]) {
      t.equal(formatDifference(v, spec), coordinatorDifference(v, spec), `${spec.metric} ${v}`);
    }
  }
  t.equal(formatValue(null, 'latency_ms p95'), '–');
  t.equal(formatValue(0.0125, 'error_rate'), '1.25%');
  t.equal(formatValue(12.345, 'latency_ms p95'), '12.3');
  t.equal(formatValue(128.44, 'latency_ms p95'), '128.4');
  t.equal(formatValue(-250, 'iou p50'), '-250.0');
  t.equal(levelText(0.97971), '97.97%');
  t.equal(pText(0.8712), '0.87');
  t.equal(pText(0.001), '0.0010');
  t.equal(pText(0.0000412), '4.1e-5');
});

t.test('a metric row: the difference, its interval, the limit, the verdict', async (t) => {
  const m = metric();
  t.equal(estimateText(m), '+200.0%');
  t.equal(intervalText(m), '[+160.0%, +230.0%]');
  t.equal(limitText(m), '≤ +10.0%');
  t.equal(
    limitText(metric({ direction: 'higher_is_better', threshold: { kind: 'absolute', value: -0.05 } })),
    '≥ -0.0500',
  );
  t.equal(
    intervalText(metric({ difference: { kind: 'relative', estimate: 0.01, low: null, high: 0.2 } })),
    '[?, +20.0%]',
  );
  t.equal(estimateText(metric({ difference: null })), '–');
  t.equal(intervalText(metric({ difference: null })), '–');
  t.equal(verdictSymbol('better'), '▲');
  t.equal(verdictSymbol('worse'), '▼');
  t.equal(verdictSymbol('inconclusive'), '≈');
  t.equal(verdictSymbol('odd' as 'better'), '•', 'a verdict the page does not know still reads');
});

t.test('SRM: ok, or flagged in red with why no decision is taken', async (t) => {
  const ok = srmLine(comparison());
  t.same(ok, {
    flagged: false,
    text: 'reporting devices control 12, candidate 12 (expected 12.0 / 12.0), χ² 0.00, p = 1.0: ok',
    reason: null,
  });
  const why =
    'sample ratio mismatch: 500/333 devices report against a 50/50 split (p = 7.0e-9 < 0.001); find why an arm';
  const bad = comparison({
    srm: { observed: [500, 333], expected: [416.5, 416.5], chi2: 33.5, p: 7e-9, flagged: true },
    notReady: ['running for 7s of the minimum 30m', why],
  });
  const line = srmLine(bad);
  t.equal(line.flagged, true);
  t.match(
    line.text,
    /control 500, candidate 333 \(expected 416\.5 \/ 416\.5\), χ² 33\.50, p = 7\.0e-9: sample ratio mismatch$/,
  );
  t.equal(line.reason, why, "the coordinator's reason");
  t.same(otherNotReady(bad), ['running for 7s of the minimum 30m'], 'the other reasons, once');
  t.equal(srmLine({ ...bad, notReady: [] }).reason, null, 'flagged without a reason given');
});

t.test('the comparison is asked for while the experiment runs, once more after it ended, then not', async (t) => {
  t.ok(needsComparison(null, null), 'nothing yet');
  t.ok(needsComparison('running', null));
  t.ok(needsComparison(null, { status: 'running' }), 'no status yet');
  t.ok(needsComparison('running', { status: 'running' }));
  t.ok(needsComparison('stopped', { status: 'running' }), 'the one it ended on');
  t.notOk(needsComparison('stopped', { status: 'stopped' }), 'then never again');
  t.notOk(needsComparison('halted', { status: 'halted' }));
});

t.test('the devices: per arm, a page at a time, the rows on screen as their live topics say', async (t) => {
  const rows = [
    { id: 'cam-2', arm: 'candidate' as const, state: 'healthy', current: '1.5.0', online: true },
    { id: 'cam-1', arm: 'candidate' as const, state: 'downloading', current: '1.4.0', online: false },
    { id: 'constructor', arm: 'control' as const, state: 'healthy', current: '1.4.0', online: true },
    { id: 'cam-3', arm: 'control' as const, state: null, current: null, online: false },
    { id: 'cam-3', arm: 'odd' as 'control', state: null, current: null, online: false },
  ];
  const per = armDevices({ devices: rows, control: '1.4.0', candidate: '1.5.0' });
  t.same(per.control, { devices: 2, online: 1, onVersion: 1 });
  t.same(per.candidate, { devices: 2, online: 1, onVersion: 1 }, 'cam-1 still runs the control');

  const s = new FleetState('ota/v1');
  s.setWatched(['cam-1', 'constructor']);
  s.applyMessage(
    'ota/v1/devices/cam-1/reported',
    JSON.stringify({
      deviceId: 'cam-1',
      seq: 2,
      ts: T0,
      rejected: null,
      models: {
        det: {
          state: 'healthy',
          version: '1.5.0',
          current: '1.5.0',
          previousVersion: '1.4.0',
          rolloutId: null,
          progress: null,
          attempt: 0,
          error: null,
          updatedAt: T0,
        },
      },
    }),
  );
  s.applyMessage('ota/v1/devices/cam-1/status', JSON.stringify({ online: true, ts: T0 }));
  // A report about another model leaves the row as experiment.status had it.
  s.applyMessage(
    'ota/v1/devices/constructor/reported',
    JSON.stringify({ deviceId: 'constructor', seq: 1, ts: T0, rejected: null, models: {} }),
  );
  const valid = sortExperimentDevices(rows.slice(0, 4));
  t.equal(rows[0]?.id, 'cam-2', 'the input is left alone');
  const page = experimentDevicePage(s, 'det', valid, 1);
  t.same(
    page.rows.map((r) => [r.id, r.arm]),
    [
      ['cam-3', 'control'],
      ['constructor', 'control'],
      ['cam-1', 'candidate'],
      ['cam-2', 'candidate'],
    ],
    'control first, then by id',
  );
  t.match(page.rows[2], { id: 'cam-1', state: 'healthy', current: '1.5.0', online: true }, 'live');
  t.match(page.rows[1], { id: 'constructor', state: 'healthy', current: '1.4.0', online: true }, 'as status had it');
  t.same([page.total, page.page, page.pages], [4, 1, 1]);
  const paged = experimentDevicePage(s, 'det', valid, 9, 3);
  t.same([paged.page, paged.pages, paged.rows.length], [2, 2, 1], 'the page is clamped to what exists');
  t.equal(experimentDevicePage(s, 'det', [], 0).pages, 1, 'an empty list is one page');
});

t.test('actions: only while running, only what the role may call; what they send', async (t) => {
  const operator = new Set(['experiment.stop', 'experiment.promote', 'experiment.ls']);
  t.same(experimentActions(experiment(), operator), ['promote', 'stop', 'stop-revert']);
  t.same(experimentActions(experiment(), new Set(['experiment.ls', 'experiment.compare'])), [], 'a viewer: none');
  t.same(experimentActions(experiment(), new Set(['experiment.stop'])), ['stop', 'stop-revert']);
  for (const status of ['halted', 'stopped', 'promoted']) {
    t.same(experimentActions(experiment({ status }), operator), [], `${status}: none`);
  }
  t.equal(ACTION_OPS['stop-revert'], 'experiment.stop');

  const stop = describeStop(experiment(), false);
  t.equal(stop.title, 'Stop exp-1');
  t.match(stop.effect, /7 devices on det 1\.4\.0, 3 devices on det 1\.5\.0/);
  const revert = describeStop(experiment({ arms: { control: 1, candidate: 1 } }), true);
  t.equal(revert.title, 'Stop exp-1 and revert');
  t.match(
    revert.effect,
    /the 1 device of the candidate arm is sent back to det 1\.4\.0 .*; the 1 device of the control arm keeps it/,
  );
});

t.test('promote: a rollout in waves or a channel move, force only when asked', async (t) => {
  t.same(promoteBlockers(null), []);
  t.same(promoteBlockers(comparison({ metrics: [metric({ verdict: 'inconclusive' })] })), []);
  const blockers = promoteBlockers(
    comparison({ srm: { observed: [5, 20], expected: [12.5, 12.5], chi2: 9, p: 0.0001, flagged: true } }),
  );
  t.same(blockers, ['latency_ms p95 is worse than its threshold', 'the sample ratio is off (SRM)']);

  t.same(DEFAULT_PROMOTE_FORM, { waves: '10,50,100', moveChannel: false, channel: '', force: false });
  const rollout = promotePlan(experiment(), DEFAULT_PROMOTE_FORM, []);
  t.match(rollout, {
    ok: true,
    args: { id: 'exp-1', waves: '10,50,100' },
    title: 'Promote exp-1: a rollout in waves 10,50,100',
  });
  t.notOk(rollout.ok && 'force' in rollout.args, 'no force unless ticked');
  t.notOk(rollout.ok && 'moveChannel' in rollout.args);
  t.match(
    rollout.ok && rollout.effect,
    /A rollout of det 1\.5\.0 over group cams \(10 devices\) starts in waves 10,50,100; its completion moves channel stable/,
  );

  const spaced = promotePlan(
    experiment(),
    { ...DEFAULT_PROMOTE_FORM, waves: ' 10, 50:manual ,100 ', channel: ' beta ' },
    [],
  );
  t.match(spaced, { ok: true, args: { waves: '10,50:manual,100', channel: 'beta' } });

  t.same(promotePlan(experiment(), { ...DEFAULT_PROMOTE_FORM, waves: '  ' }, []).ok, false, 'blank waves');
  t.match(promotePlan(experiment(), { ...DEFAULT_PROMOTE_FORM, waves: '' }, []), { problem: /Give the waves/ });

  const move = promotePlan(experiment(), { ...DEFAULT_PROMOTE_FORM, waves: '', moveChannel: true }, []);
  t.match(move, { ok: true, args: { id: 'exp-1', moveChannel: true, yes: true }, title: /move channel stable now/ });
  t.notOk(move.ok && 'waves' in move.args, 'a channel move sends no waves');
  t.match(move.ok && move.effect, /Channel stable of det moves to 1\.5\.0 now/);

  const forced = promotePlan(experiment(), { ...DEFAULT_PROMOTE_FORM, force: true }, blockers);
  t.match(forced, { ok: true, args: { force: true } });
  t.match(
    forced.ok && forced.effect,
    /Forced although latency_ms p95 is worse than its threshold and the sample ratio is off/,
  );
  const forcedClean = promotePlan(experiment(), { ...DEFAULT_PROMOTE_FORM, force: true }, []);
  t.notMatch(forcedClean.ok && forcedClean.effect, /Forced/, 'nothing to override: no word of it');
});

t.test('chart axes: round numbers from 0 to at least the largest value', async (t) => {
  t.equal(niceStep(0), 1);
  t.equal(niceStep(-3), 1);
  t.equal(niceStep(Number.NaN), 1);
  t.equal(niceStep(Number.POSITIVE_INFINITY), 1);
  t.equal(niceStep(1), 1);
  t.equal(niceStep(1.2), 2);
  t.equal(niceStep(3.07), 5);
  t.equal(niceStep(7), 10);
  t.equal(niceStep(0.3), 0.5);
  t.equal(niceStep(0.03), 0.05);
  t.equal(niceStep(15.8), 20);
  t.same(valueAxis(63.4), { top: 80, steps: [0, 20, 40, 60, 80] });
  t.same(valueAxis(12.3), { top: 15, steps: [0, 5, 10, 15] });
  t.same(valueAxis(44.7), { top: 60, steps: [0, 20, 40, 60] });
  t.same(valueAxis(0), { top: 1, steps: [0, 1] });
  t.same(valueAxis(0.42), { top: 0.6, steps: [0, 0.2, 0.4, 0.6] });
  t.same(valueAxis(1000), { top: 1000, steps: [0, 500, 1000] });
  t.equal(formatMs(128.44), '128');
  t.equal(formatMs(12.345), '12.3');
  t.equal(formatMs(9.87), '9.9');
  t.equal(formatMs(0.8712), '0.87');
});

t.test('the latency chart: p50-p99 of both arms side by side, in ms, on one axis', async (t) => {
  const c = comparison();
  c.candidate.latencyMs = { p50: 30, p90: 48, p95: 55.2, p99: 63.4, max: 90 };
  const chart = latencyChart(c);
  t.equal(chart.bars.length, 8);
  t.notOk(chart.empty);
  t.equal(chart.max, 80, 'the axis tops the slowest p99');
  t.same(
    chart.bars.map((b) => `${b.arm}:${b.key}`),
    ['p50', 'p90', 'p95', 'p99'].flatMap((k) => [`control:${k}`, `candidate:${k}`]),
  );
  const { plot } = chart;
  for (const b of chart.bars) {
    t.ok(b.x >= plot.left && b.x + b.width <= plot.right, `${b.arm} ${b.key} inside the plot`);
    t.equal(Math.round((b.y + b.height) * 1e6) / 1e6, plot.bottom, 'standing on the baseline');
    t.ok(Math.abs(b.height - ((plot.bottom - plot.top) * b.value) / 80) < 1e-9, 'height in proportion');
    t.equal(b.text, formatMs(b.value));
  }
  const p99 = chart.bars.find((b) => b.arm === 'candidate' && b.key === 'p99');
  t.equal(p99?.title, 'candidate 1.5.0 p99: 63.4 ms');
  // Each quantile's pair: control left of candidate, not overlapping, and the pairs in order.
  for (let i = 0; i < 8; i += 2) {
    const [a, b] = [chart.bars[i], chart.bars[i + 1]];
    t.ok(a && b && a.x + a.width < b.x, 'side by side');
    if (i > 0) t.ok(a && (chart.bars[i - 1]?.x ?? 0) < a.x, 'in order');
  }
  t.same(
    chart.xTicks.map((x) => x.label),
    ['p50', 'p90', 'p95', 'p99'],
  );
  t.same(
    chart.yTicks.map((y) => y.label),
    ['0', '20', '40', '60', '80'],
  );
  t.equal(chart.yTicks[0]?.pos, plot.bottom);
  t.equal(chart.yTicks.at(-1)?.pos, plot.top);

  const one = latencyChart({ control: c.control, candidate: { ...c.candidate, latencyMs: null } });
  t.equal(one.bars.length, 4, 'an arm without samples has no bars');
  t.ok(one.bars.every((b) => b.arm === 'control'));
  t.notOk(one.empty);
  const none = latencyChart({
    control: { ...c.control, latencyMs: null },
    candidate: { ...c.candidate, latencyMs: null },
  });
  t.ok(none.empty, 'nothing to draw');
  t.equal(none.bars.length, 0);
});

t.test('the confidence chart: ten bins of both arms, each as its share of the arm', async (t) => {
  t.equal(confidenceShares(null), null);
  t.equal(confidenceShares([0, 0, 0]), null, 'no counts');
  t.same(confidenceShares([1, 3]), [25, 75, 0, 0, 0, 0, 0, 0, 0, 0], 'short input: the rest are 0');
  t.same(confidenceShares([-1, 1, 0, 0, 0, 0, 0, 0, 0, 1]), [0, 50, 0, 0, 0, 0, 0, 0, 0, 50], 'no negative count');

  const c = comparison();
  c.candidate.confidence = [0, 0, 0, 0, 0, 0, 0, 0, 50, 150];
  const chart = confidenceChart(c);
  t.equal(chart.bars.length, 20);
  t.same(
    chart.bars.filter((b) => b.arm === 'candidate').map((b) => b.value),
    [0, 0, 0, 0, 0, 0, 0, 0, 25, 75],
  );
  t.same(
    chart.bars.filter((b) => b.arm === 'control').map((b) => b.value),
    [0, 0, 0, 0, 0, 0, 0, 10, 30, 60],
    'shares, not counts: the arms compare whatever their size',
  );
  t.equal(chart.max, 80);
  t.ok(
    chart.bars.every((b) => b.text === null),
    'too narrow for labels: the tooltips say it',
  );
  const last = chart.bars.at(-1);
  t.equal(last?.title, 'candidate 1.5.0 confidence 0.9–1.0: 75.0% (150)');
  t.equal(last?.key, '0.9');
  t.same(
    chart.xTicks.map((x) => x.label),
    ['0', '0.2', '0.4', '0.6', '0.8', '1'],
  );
  t.equal(chart.xTicks[0]?.pos, chart.plot.left);
  t.equal(chart.xTicks.at(-1)?.pos, chart.plot.right);
  t.same(
    chart.yTicks.map((y) => y.label),
    ['0%', '20%', '40%', '60%', '80%'],
  );
  t.ok(
    confidenceChart({ control: { ...c.control, confidence: null }, candidate: { ...c.candidate, confidence: null } })
      .empty,
  );
});

t.test("a metric's interval against zero and the threshold", async (t) => {
  t.equal(intervalGeometry(metric({ difference: null })), null);
  // Lower is better, limit +10%: the interval [+160%, +230%] lies beyond it, on the right.
  const worse = intervalGeometry(metric());
  t.ok(worse);
  if (!worse) return;
  t.equal(worse.width, 160);
  t.ok(worse.zero < worse.threshold, 'zero left of the +10% limit');
  t.ok(worse.threshold < (worse.interval?.x1 ?? 0), 'the whole interval beyond the limit');
  t.ok((worse.interval?.x1 ?? 0) < worse.estimate && worse.estimate < (worse.interval?.x2 ?? 0));
  t.same(worse.bad, { x: worse.threshold, width: 160 - worse.threshold }, 'the right side is not allowed');
  t.ok(worse.zero > 0 && (worse.interval?.x2 ?? 160) < 160, 'a margin each side');
  t.equal(worse.label, 'difference +200.0%, interval [+160.0%, +230.0%], limit ≤ +10.0%');

  // Higher is better, limit -0.05: the bad side is on the left.
  const conf = intervalGeometry(
    metric({
      metric: 'confidence mean',
      direction: 'higher_is_better',
      threshold: { kind: 'absolute', value: -0.05 },
      difference: { kind: 'absolute', estimate: 0.008, low: -0.028, high: 0.046 },
      verdict: 'inconclusive',
    }),
  );
  t.ok(conf && conf.threshold < conf.zero);
  t.same(conf?.bad, { x: 0, width: conf?.threshold });

  const open = intervalGeometry(metric({ difference: { kind: 'relative', estimate: 0.05, low: null, high: 0.3 } }));
  t.equal(open?.interval, null, 'no bar without both bounds');
  t.match(open?.label, /\[\?, \+30\.0%\]/);

  const flat = intervalGeometry(
    metric({
      threshold: { kind: 'absolute', value: 0 },
      difference: { kind: 'absolute', estimate: 0, low: 0, high: 0 },
    }),
  );
  t.ok(flat && flat.zero > 0 && flat.zero < 160, 'everything at 0: still a scale, 0 in the middle');
  t.equal(flat?.zero, 80);
});

t.test('the poller: now, then after each run settles; never two at once; poke; stop', async (t) => {
  let now = 0;
  const timers: { at: number; fn: () => void; id: number }[] = [];
  let nextId = 1;
  const fake: Timers = {
    now: () => now,
    setTimeout: (fn, ms) => {
      const id = nextId++;
      timers.push({ at: now + ms, fn, id });
      return id;
    },
    clearTimeout: (h) => {
      const i = timers.findIndex((x) => x.id === h);
      if (i >= 0) timers.splice(i, 1);
    },
  };
  const flush = () => new Promise<void>((r) => setImmediate(r));
  const advance = async (to: number) => {
    now = to;
    for (;;) {
      await flush();
      const due = timers.filter((x) => x.at <= now).sort((a, b) => a.at - b.at)[0];
      if (!due) return;
      timers.splice(timers.indexOf(due), 1);
      due.fn();
    }
  };
  let runs = 0;
  let release: (() => void) | null = null;
  let fail = false;
  const poller = new Poller(
    () => {
      runs++;
      if (fail) {
        fail = false;
        throw new Error('thrown, not rejected');
      }
      return new Promise<void>((r) => {
        release = r;
      });
    },
    fake,
    5000,
  );
  poller.poke();
  t.equal(runs, 0, 'a poke before start does nothing');
  poller.start();
  t.equal(runs, 1, 'the first run at once');
  poller.start();
  t.equal(runs, 1, 'start is once');
  await advance(20_000);
  t.equal(runs, 1, 'a slow run: no second one stacked on it');
  t.ok(poller.busy);
  poller.poke();
  poller.poke();
  t.equal(runs, 1, 'a poke while a run is on its way waits for it');
  (release as unknown as () => void)();
  await flush();
  t.equal(runs, 2, 'then one run for all the pokes');
  (release as unknown as () => void)();
  await flush();
  t.equal(timers.length, 1, 'the next run is a timer');
  await advance(24_999);
  t.equal(runs, 2, 'not before the interval');
  await advance(25_000);
  t.equal(runs, 3, 'an interval after the run settled');
  (release as unknown as () => void)();
  await flush();
  poller.poke();
  t.equal(runs, 4, 'a poke while idle runs at once');
  t.equal(timers.length, 0, 'and drops the timer it replaces');
  fail = true;
  (release as unknown as () => void)();
  await flush();
  await advance(30_000);
  t.equal(runs, 5, 'the next run');
  await advance(35_000);
  t.equal(runs, 6, 'a task that throws is retried like any');
  poller.poke();
  poller.stop();
  (release as unknown as () => void)();
  await advance(100_000);
  t.equal(runs, 6, 'stopped: the run on its way has no successor');
  t.equal(timers.length, 0);
  poller.start();
  poller.poke();
  t.equal(runs, 6, 'a stopped poller stays stopped');
  t.notOk(poller.busy);
});
