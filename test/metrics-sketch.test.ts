import t, { type Test } from 'tap';
import { MetricsSchema, SketchSchema } from '../shared/messages.js';
import {
  BASE_RELATIVE_ACCURACY,
  binCount,
  coarsen,
  emptySketch,
  fitBins,
  mean,
  mergeAll,
  mergeSketches,
  quantile,
  relativeAccuracyAt,
  sketchOfValues,
} from '../shared/metrics/sketch.js';
import { prng } from './helpers/prng.js';
import { exactQuantile } from './helpers/quantiles.js';

const sketchOf = sketchOfValues;

function withinRelative(t: Test, got: number | null, want: number, alpha: number, what: string): void {
  t.ok(
    got !== null && Math.abs((got as number) - want) <= alpha * Math.abs(want) + 1e-12,
    `${what}: ${got} ~ ${want} (alpha ${alpha})`,
  );
}

const QUANTILES = [0.01, 0.25, 0.5, 0.9, 0.95, 0.99];

t.test('quantiles of the wire form are within the relative accuracy of the exact ones', async (t) => {
  const random = prng(7).next;
  // Log-normal latencies, a spread of ~100x, plus a few zeros.
  const values = Array.from({ length: 5000 }, () => Math.exp(2 + random() * 4.6));
  values.push(0, 0, 0);
  const sorted = [...values].sort((a, b) => a - b);
  const s = sketchOf(values);
  t.ok(SketchSchema.safeParse(s).success, 'the wire form passes the schema');
  t.equal(s.count, values.length);
  t.equal(s.zeros, 3);
  t.equal(quantile(s, 0), 0, 'q=0 is the exact min');
  t.equal(quantile(s, 1), sorted.at(-1), 'q=1 is the exact max');
  for (const q of QUANTILES)
    withinRelative(t, quantile(s, q), exactQuantile(sorted, q), BASE_RELATIVE_ACCURACY, `p${q * 100}`);
  t.ok(Math.abs((mean(s) as number) - values.reduce((a, b) => a + b, 0) / values.length) < 1e-9, 'mean is exact');
  t.equal(quantile(emptySketch(), 0.5), null, 'an empty sketch has no quantile');
  t.equal(mean(emptySketch()), null);
});

t.test('negative values and merging: the merge is the sketch of the union', async (t) => {
  const random = prng(11).next;
  const a = Array.from({ length: 1000 }, () => (random() - 0.3) * 100);
  const b = Array.from({ length: 3000 }, () => random() * 40 + 1);
  const merged = mergeSketches(sketchOf(a), sketchOf(b));
  const sorted = [...a, ...b].sort((x, y) => x - y);
  t.equal(merged.count, 4000);
  t.ok(SketchSchema.safeParse(merged).success);
  for (const q of QUANTILES)
    withinRelative(t, quantile(merged, q), exactQuantile(sorted, q), BASE_RELATIVE_ACCURACY, `p${q * 100}`);
  t.same(mergeAll([sketchOf(a), sketchOf(b)]), merged, 'mergeAll is the same merge');
  t.same(mergeSketches(emptySketch(), merged), merged, 'the empty sketch is the identity');
  t.same(mergeSketches(merged, emptySketch()), merged);
});

t.test('coarsening is exact per level and bounds the bins; levels merge at the coarser one', async (t) => {
  const random = prng(3).next;
  const values = Array.from({ length: 4000 }, () => Math.exp(random() * 12)); // 1 .. 160,000: ~600 bins at 1%
  const sorted = [...values].sort((x, y) => x - y);
  const fine = sketchOf(values);
  t.ok(binCount(fine) > 500, `the fine sketch has ${binCount(fine)} bins`);
  const fitted = fitBins(fine, 100);
  t.ok(binCount(fitted) <= 100, `fitted to ${binCount(fitted)} bins at level ${fitted.level}`);
  t.equal(fitted.count, fine.count);
  for (const q of QUANTILES)
    withinRelative(
      t,
      quantile(fitted, q),
      exactQuantile(sorted, q),
      relativeAccuracyAt(fitted.level),
      `level ${fitted.level} p${q * 100}`,
    );
  t.ok(relativeAccuracyAt(1) > BASE_RELATIVE_ACCURACY && relativeAccuracyAt(1) < 2.01 * BASE_RELATIVE_ACCURACY);
  // Coarsening one level twice is the same as two levels at once.
  t.same(coarsen(coarsen(fine, 1), 2), coarsen(fine, 2));
  t.equal(coarsen(fine, 0), fine, 'no finer level than its own');
  const other = sketchOf([5, 6, 7]);
  const mixed = mergeSketches(other, fitted);
  t.equal(mixed.level, fitted.level, 'merged at the coarser level');
  t.equal(mixed.count, fine.count + 3);
});

t.test('an empty sketch is the identity of a merge, whatever its level', async (t) => {
  const s = sketchOf([1, 2, 3]);
  t.equal(mergeSketches(s, emptySketch(16)), s, 'a coarse empty sketch does not coarsen the other');
  t.equal(mergeSketches(emptySketch(16), s), s);
});

t.test('the schema refuses inconsistent or non-numeric sketches and messages', async (t) => {
  const good = sketchOf([1, 2, 3]);
  const bad: [string, unknown][] = [
    ['count does not match the bins', { ...good, count: 4 }],
    ['min above max', { ...good, min: 9, max: 1 }],
    ['a string count', { ...good, positive: { offset: 0, counts: ['1'] } }],
    ['a level beyond the coarsest', { ...good, level: 99 }],
    ['too many bins', { ...good, positive: { offset: 0, counts: new Array(2000).fill(0) } }],
    ['Infinity', { ...good, sum: Number.POSITIVE_INFINITY }],
    ['a bin key no double maps to', { ...good, positive: { offset: 39_000, counts: [3] } }],
    ['bins that run past the largest key', { ...good, positive: { offset: 37_999, counts: [1, 1, 1] } }],
    ['a max beyond 1e12', { ...good, max: 1e13 }],
    ['a sum no values within 1e12 can reach', { ...good, sum: 4e12 }],
  ];
  for (const [what, value] of bad) t.notOk(SketchSchema.safeParse(value).success, what);
  const ts = '2026-12-06T10:00:00.000Z';
  const series = { model: 'm', version: '1', source: 'app', count: 3, errors: 0, latencyMs: good };
  const message = { ts, windowStart: ts, windowSeconds: 60, series: [series] };
  t.ok(MetricsSchema.safeParse(message).success);
  t.notOk(MetricsSchema.safeParse({ ...message, series: [series, series] }).success, 'a series twice');
  t.notOk(MetricsSchema.safeParse({ ...message, series: [{ ...series, errors: 4 }] }).success, 'errors above count');
  t.notOk(
    MetricsSchema.safeParse({ ...message, series: [{ ...series, count: 2 }] }).success,
    'count is not the latency count',
  );
  t.notOk(
    MetricsSchema.safeParse({ ...message, series: [{ ...series, values: { 'Bad Name': good } }] }).success,
    'a value name outside the pattern',
  );
  // Unknown fields are dropped (devices' messages are lenient), never carried on.
  const parsed = MetricsSchema.parse({ ...message, note: 'raw text', series: [{ ...series, input: 'pixels' }] });
  t.notMatch(JSON.stringify(parsed), /raw text|pixels/, 'strings in unknown fields do not survive parsing');
});
