import t, { type Test } from 'tap';
import { encodedBytes, fitToBudget, roundOutward } from '../agent/metrics/fit-budget.js';
import { WindowAggregator } from '../agent/metrics/window-aggregator.js';
import { type Metrics, MetricsSchema } from '../shared/messages.js';
import { CONFIDENCE_BINS, MAX_SERIES, MESSAGE_BUDGET_BYTES } from '../shared/metrics/limits.js';
import { quantile, relativeAccuracyAt, type WireSketch } from '../shared/metrics/sketch.js';
import { prng } from './helpers/prng.js';
import { exactQuantile } from './helpers/quantiles.js';

const START = new Date('2025-03-01T10:00:00Z');
const NOW = new Date('2025-03-01T10:01:00Z');
const QUANTILES = [0.01, 0.25, 0.5, 0.9, 0.95, 0.99];

function checkQuantiles(t: Test, s: WireSketch, values: number[], what: string): void {
  const sorted = [...values].sort((a, b) => a - b);
  const alpha = relativeAccuracyAt(s.level);
  for (const q of QUANTILES) {
    const got = quantile(s, q) as number;
    const want = exactQuantile(sorted, q);
    t.ok(
      Math.abs(got - want) <= alpha * Math.abs(want) + 1e-12,
      `${what} p${q * 100}: ${got} ~ ${want} (level ${s.level})`,
    );
  }
}

t.test('a window: counts, errors, confidence bins, quantiles vs exact values', async (t) => {
  const random = prng(5).next;
  const agg = new WindowAggregator();
  const latencies: number[] = [];
  const boxes: number[] = [];
  const confidence = new Array<number>(CONFIDENCE_BINS).fill(0);
  let errors = 0;
  for (let i = 0; i < 20_000; i++) {
    const latencyMs = Math.exp(1 + random() * 4);
    const c = i % 7 === 0 ? 1 : random();
    const b = Math.floor(random() * 50) - 5;
    const error = random() < 0.03;
    latencies.push(latencyMs);
    boxes.push(b);
    const bin = Math.min(9, Math.floor(c * 10));
    confidence[bin] = (confidence[bin] as number) + 1;
    if (error) errors++;
    t.equal(
      agg.add({ model: 'detector', version: '1.1.0', latencyMs, confidence: c, error, values: { boxes: b } }),
      true,
    );
  }
  agg.recordProbe('detector', '1.1.0', 42);
  t.equal(agg.droppedSinceClose, 0);
  const m = agg.close(START, NOW, 60) as Metrics;
  t.ok(MetricsSchema.safeParse(m).success, 'the message passes the schema');
  t.ok(encodedBytes(m) <= MESSAGE_BUDGET_BYTES);
  t.match(m, { ts: NOW.toISOString(), windowStart: START.toISOString(), windowSeconds: 60, windowsMerged: 1 });
  const app = m.series.find((s) => s.source === 'app');
  const probe = m.series.find((s) => s.source === 'probe');
  t.match(app, { model: 'detector', version: '1.1.0', count: 20_000, errors });
  t.same(app?.confidence, confidence);
  checkQuantiles(t, app?.latencyMs as WireSketch, latencies, 'latency');
  checkQuantiles(t, app?.values?.boxes as WireSketch, boxes, 'boxes');
  t.match(probe, { count: 1, errors: 0, latencyMs: { min: 42, max: 42 } });
  t.equal(probe?.confidence, undefined, 'no confidence reported: none sent');
  t.equal(agg.close(NOW, NOW, 60), null, 'a new window starts empty; nothing observed, nothing sent');
});

t.test('the series cap: more series are dropped and counted, per source', async (t) => {
  const agg = new WindowAggregator();
  for (let i = 0; i < MAX_SERIES + 3; i++) agg.add({ model: `m${i}`, version: '1', latencyMs: 1 });
  t.equal(agg.add({ model: 'm0', version: '1', latencyMs: 2 }), true, 'a known series still takes observations');
  agg.recordProbe('m99', '1', 5);
  agg.countDropped(4);
  agg.countDropped(0);
  const m = agg.close(START, NOW, 60) as Metrics;
  t.equal(m.series.filter((s) => s.source === 'app').length, MAX_SERIES);
  t.equal(m.series.filter((s) => s.source === 'probe').length, 1, 'the probe has its own series budget');
  t.same(m.dropped, { observations: 3 + 4, windows: 0 });
  const onlyDrops = new WindowAggregator();
  onlyDrops.countDropped(2);
  t.match(onlyDrops.close(START, NOW, 60), { series: [], dropped: { observations: 2 } }, 'drops alone make a message');
});

t.test('the byte budget holds against an adversarial spread, quantiles within the level accuracy', async (t) => {
  const random = prng(99).next;
  const agg = new WindowAggregator();
  const names = ['a_value', 'b_value', 'c_value', 'd_value'];
  const exact = new Map<string, number[]>();
  // Positive values over 15 decades: values of both signs over that spread in all 32 value sketches
  // do not fit even at the coarsest level (about 8,500 bytes) and close() drops a series, counted.
  const spread = () => 10 ** (-6 + random() * 15);
  for (let s = 0; s < MAX_SERIES; s++) {
    // Names of a usual length: with 64-character model names and versions the coarsest sketches
    // do not fit either, and close() drops whole series (counted; the next test).
    const model = `object-detector-${s}`;
    const version = `1.${s}.0-rc.1`;
    for (let i = 0; i < 3000; i++) {
      const latencyMs = spread();
      const values = Object.fromEntries(names.map((n) => [n, spread()]));
      agg.add({ model, version, latencyMs, confidence: random(), values });
      (exact.get(`${s}/latency`) ?? exact.set(`${s}/latency`, []).get(`${s}/latency`))?.push(latencyMs);
      for (const n of names)
        (exact.get(`${s}/${n}`) ?? exact.set(`${s}/${n}`, []).get(`${s}/${n}`))?.push(values[n] as number);
    }
  }
  for (let i = 0; i < 100; i++) agg.recordProbe('object-detector-0', '1.0.0-rc.1', 10 ** (-6 + random() * 15));
  const m = agg.close(START, NOW, 60) as Metrics;
  const bytes = encodedBytes(m);
  t.ok(bytes <= MESSAGE_BUDGET_BYTES, `${bytes} bytes <= ${MESSAGE_BUDGET_BYTES}`);
  t.ok(MetricsSchema.safeParse(m).success);
  t.equal(m.dropped?.observations, 0, 'nothing dropped to fit: coarser sketches only');
  t.equal(m.series.length, MAX_SERIES + 1);
  for (let s = 0; s < MAX_SERIES; s++) {
    const series = m.series[s];
    t.equal(series?.count, 3000);
    checkQuantiles(t, series?.latencyMs as WireSketch, exact.get(`${s}/latency`) as number[], `series ${s} latency`);
    for (const n of names)
      checkQuantiles(t, series?.values?.[n] as WireSketch, exact.get(`${s}/${n}`) as number[], `series ${s} ${n}`);
  }
});

t.test(
  'fitToBudget: null when even the coarsest sketches cannot fit; close() then drops the smallest series, counted',
  async (t) => {
    const agg = new WindowAggregator({ budgetBytes: 1200 });
    for (let s = 0; s < 6; s++)
      for (let i = 0; i <= s; i++)
        agg.add({ model: `m${s}`, version: '1', latencyMs: 10 ** (i % 5), values: { v: i } });
    const m = agg.close(START, NOW, 60) as Metrics;
    t.ok(encodedBytes(m) <= 1200);
    t.ok(MetricsSchema.safeParse(m).success);
    const kept = m.series.reduce((n, s) => n + s.count, 0);
    t.ok(m.series.length < 6, `${m.series.length} series kept`);
    t.equal(kept + (m.dropped?.observations ?? 0), 21, 'every observation is in a series or counted as dropped');
    t.notOk(
      m.series.some((s) => s.model === 'm0'),
      'the smallest series went first',
    );
    t.equal(fitToBudget(m, 10), null);
  },
);

t.test('over budget near the value bound: what the agent sends, the schema takes', async (t) => {
  // 999,999,400,000 rounded up to 6 digits would be 1.00001e12, past the bound the coordinator
  // checks; the rounding stops at the bound (a review finding: the agent refused its own file).
  t.equal(roundOutward(999_999_400_000, 1), 1e12);
  t.equal(roundOutward(-999_999_400_000, -1), -1e12);
  t.equal(roundOutward(12.3456789, 1), 12.3457);
  t.equal(roundOutward(12.3456789, -1), 12.3456);
  const agg = new WindowAggregator();
  const names = ['a', 'b', 'c', 'd'];
  for (let s = 0; s < MAX_SERIES; s++)
    for (let i = 0; i < 50; i++) {
      const values = Object.create(null) as Record<string, number>;
      for (const [k, n] of names.entries()) values[n] = k === 3 ? 999_999_400_000 - i : (i + 1) * 10 ** (k * 3);
      agg.add({ model: `m${s}`, version: '1.0.0', latencyMs: 1e-6 * 10 ** (i % 15), values });
    }
  const m = agg.close(new Date('2026-12-06T10:00:00Z'), new Date('2026-12-06T10:01:00Z'), 60);
  t.ok(m && encodedBytes(m) <= MESSAGE_BUDGET_BYTES, `${m && encodedBytes(m)} bytes`);
  const parsed = MetricsSchema.safeParse(m);
  t.ok(parsed.success, parsed.success ? 'the schema takes it' : parsed.error.message);
});
