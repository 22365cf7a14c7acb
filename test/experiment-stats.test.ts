import t, { type Test } from 'tap';
import { alphaForLook, lookIndexAt, lookTimeMs } from '../coordinator/experiments/stats/looks.js';
import { chiSquared1Survival, erfc, normalCdf, normalQuantile } from '../coordinator/experiments/stats/normal.js';
import { hodgesLehmann, kthPairwiseDifference, mannWhitney } from '../coordinator/experiments/stats/rank-tests.js';
import { srmCheck } from '../coordinator/experiments/stats/srm.js';
import { prng } from './helpers/prng.js';

// The experiment statistics (coordinator/experiments/stats). Reference values were computed once
// with scipy 1.17.1 (the call is named beside each table) and are hard-coded: CI has no scipy.

function relativelyClose(t: Test, got: number, want: number, tolerance: number, what: string): void {
  t.ok(Math.abs(got - want) <= tolerance * Math.abs(want), `${what}: ${got} ~ ${want} (relative ${tolerance})`);
}

t.test('normalCdf, erfc and chiSquared1Survival match scipy, tails included', async (t) => {
  // scipy.stats.norm.cdf(z)
  const cdf: [number, number][] = [
    [-37, 5.7255712225239266e-300],
    [-20, 2.7536241186061556e-89],
    [-8, 6.22096057427174e-16],
    [-5, 2.866515718791933e-7],
    [-1.5, 0.06680720126885807],
    [-0.3, 0.3820885778110474],
    [0, 0.5],
    [0.3, 0.6179114221889526],
    [1.96, 0.9750021048517795],
    [3, 0.9986501019683699],
  ];
  for (const [z, want] of cdf) relativelyClose(t, normalCdf(z), want, 1e-12, `Phi(${z})`);
  t.equal(normalCdf(8.5), 1, 'Phi(8.5) rounds to 1 (scipy: 1.0)');
  t.equal(normalCdf(Number.NEGATIVE_INFINITY), 0);
  t.equal(normalCdf(Number.POSITIVE_INFINITY), 1);
  for (const z of [0.1, 0.7, 1.3, 2.2, 4, 6.5])
    t.ok(Math.abs(normalCdf(z) + normalCdf(-z) - 1) < 1e-15, `Phi(${z}) + Phi(-${z}) = 1`);

  // scipy.special.erfc(x): both sides of the switch from the series to the continued fraction (1.5)
  const erfcs: [number, number][] = [
    [-1, 1.8427007929497148],
    [0.5, 0.4795001221869535],
    [1.4999, 0.033906748337704726],
    [1.5, 0.03389485352468927],
    [3, 2.2090496998585445e-5],
    [10, 2.0884875837625446e-45],
    [26, 5.663192408856145e-296],
  ];
  for (const [x, want] of erfcs) relativelyClose(t, erfc(x), want, 1e-13, `erfc(${x})`);
  t.equal(erfc(30), 0, 'erfc(30) < 1e-300: underflows to 0');

  // scipy.stats.chi2.sf(x, 1)
  const chi: [number, number][] = [
    [0.01, 0.920344325445942],
    [1, 0.31731050786291115],
    [3.841458820694124, 0.04999999999999989],
    [10, 0.001565402258002549],
    [40, 2.5396285894708634e-10],
    [100, 1.5239706048320995e-23],
    [1000, 1.7958327848007363e-219],
  ];
  for (const [x, want] of chi) relativelyClose(t, chiSquared1Survival(x), want, 1e-12, `chi2_1 sf(${x})`);
  t.equal(chiSquared1Survival(0), 1, 'x = 0: the whole distribution is above');
  t.equal(chiSquared1Survival(-3), 1, 'x < 0: likewise');
  t.equal(chiSquared1Survival(Number.POSITIVE_INFINITY), 0);

  t.throws(() => normalCdf(Number.NaN), { name: 'RangeError', message: /normalCdf: z is NaN/ });
  t.throws(() => erfc(Number.NaN), { name: 'RangeError', message: /erfc: the argument is NaN/ });
  t.throws(() => chiSquared1Survival(Number.NaN), { name: 'RangeError', message: /chiSquared1Survival: x is NaN/ });
});

t.test('normalQuantile matches scipy to 1e-9, tails included, and inverts normalCdf', async (t) => {
  // scipy.stats.norm.ppf(p)
  const ppf: [number, number][] = [
    [1e-300, -37.0470962993612],
    [1e-10, -6.361340902404056],
    [1e-5, -4.264890793922825],
    [0.001, -3.090232306167813],
    [0.02425, -1.972961051311885],
    [0.025, -1.9599639845400545],
    [0.3, -0.5244005127080409],
    [0.5, 0],
    [0.8, 0.8416212335729143],
    [0.975, 1.959963984540054],
    [0.999, 3.090232306167813],
    [1 - 1e-10, 6.361340889697422],
  ];
  for (const [p, want] of ppf) {
    const got = normalQuantile(p);
    t.ok(Math.abs(got - want) < 1e-9, `Phi^-1(${p}) = ${got} ~ ${want}`);
  }
  const random = prng(5).next;
  for (let i = 0; i < 200; i++) {
    const p = 10 ** (-12 * random()) * (random() < 0.5 ? 1 : 0.5);
    relativelyClose(t, normalCdf(normalQuantile(p)), p, 1e-12, `Phi(Phi^-1(${p}))`);
  }
  for (const p of [0, 1, -0.1, 1.5, Number.NaN])
    t.throws(() => normalQuantile(p), { name: 'RangeError', message: /p must be strictly between 0 and 1/ }, `${p}`);
});

t.test('mannWhitney matches scipy (asymptotic, continuity corrected), ties included', async (t) => {
  // scipy.stats.mannwhitneyu(x, y, alternative='two-sided', method='asymptotic', use_continuity=True):
  // [statistic, pvalue]
  const cases: [string, number[], number[], number, number][] = [
    [
      'Hollander & Wolfe (1973) p. 69, permeability',
      [0.8, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46],
      [1.15, 0.88, 0.9, 0.74, 1.21],
      35,
      0.24462360512698333,
    ],
    ['ties', [3, 5, 5, 7, 7, 7, 9, 12], [1, 3, 3, 5, 6, 7, 8], 39.5, 0.19567633302190923],
    [
      'latencies, x slower',
      [41.5, 38.2, 44.1, 52.0, 39.9, 47.3, 41.5, 60.2, 43.8, 45.0, 41.5, 58.7],
      [36.1, 41.5, 37.7, 40.2, 35.9, 39.9, 38.8, 42.6, 37.0],
      95,
      0.003870293989019889,
    ],
    ['the same values', [1, 2, 3, 4, 5], [1, 2, 3, 4, 5], 12.5, 1],
    ['one device each', [2], [1], 1, 1],
    ['x lower', [1, 1, 2, 2, 2, 3], [2, 3, 3, 4, 4, 4, 5], 3.5, 0.012611733977298952],
  ];
  for (const [name, x, y, u, p] of cases) {
    const r = mannWhitney(x, y);
    t.equal(r.u, u, `${name}: u`);
    relativelyClose(t, r.p, p, 1e-12, `${name}: p`);
    const back = mannWhitney(y, x);
    t.equal(back.u, x.length * y.length - u, `${name}: u(y, x) = n*m - u(x, y)`);
    t.equal(back.z, -r.z, `${name}: z changes sign with the order`);
  }
  t.ok(mannWhitney(cases[2]?.[1] as number[], cases[2]?.[2] as number[]).z > 2, 'x tending higher gives z > 0');
  t.ok(mannWhitney(cases[5]?.[1] as number[], cases[5]?.[2] as number[]).z < -2, 'x tending lower gives z < 0');
  t.same(mannWhitney([4, 4], [4, 4, 4]), { u: 3, z: 0, p: 1 }, 'all tied: variance 0, z 0, p 1');
  t.same(mannWhitney([-0, 0], [0]), { u: 1, z: 0, p: 1 }, '-0 and 0 are one value');

  t.throws(() => mannWhitney([], [1]), { name: 'RangeError', message: /mannWhitney: x is empty/ });
  t.throws(() => mannWhitney([1], []), { name: 'RangeError', message: /mannWhitney: y is empty/ });
  t.throws(() => mannWhitney([1, Number.NaN], [1]), { name: 'RangeError', message: /mannWhitney: x\[1\] is NaN/ });
  t.throws(() => mannWhitney([1], [Number.POSITIVE_INFINITY]), {
    name: 'RangeError',
    message: /y\[0\] is Infinity; every value must be a finite number/,
  });
});

/** Every x_i - y_j, sorted ascending: the brute force the fast code must agree with. */
function allDifferences(x: readonly number[], y: readonly number[]): number[] {
  const d: number[] = [];
  for (const a of x) for (const b of y) d.push(a - b);
  return d.sort((a, b) => a - b);
}

const ascending = (values: readonly number[]) => [...values].sort((a, b) => a - b);

/** z_{(1+level)/2}: scipy.stats.norm.ppf((1 + level) / 2), so C does not lean on normalQuantile. */
const Z: [number, number][] = [
  [0.8, 1.2815515655446004],
  [0.9, 1.6448536269514722],
  [0.95, 1.959963984540054],
  [0.99, 2.5758293035489004],
];

/** The documented interval, from the sorted differences: C = floor(nm/2 - 1/2 - z sqrt(nm(n+m+1)/12)). */
function bruteShift(x: readonly number[], y: readonly number[], level: number, z: number) {
  const d = allDifferences(x, y);
  const nm = d.length;
  const estimate = nm % 2 === 1 ? d[(nm - 1) / 2] : ((d[nm / 2 - 1] as number) + (d[nm / 2] as number)) / 2;
  const c = Math.floor(nm / 2 - 0.5 - z * Math.sqrt((nm * (x.length + y.length + 1)) / 12));
  return c < 0
    ? { estimate, low: null, high: null, level }
    : { estimate, low: d[c] as number, high: d[nm - c - 1] as number, level };
}

t.test('kthPairwiseDifference is exactly the brute-force k-th difference, for every k', async (t) => {
  const random = prng(21);
  let checked = 0;
  for (let trial = 0; trial < 400; trial++) {
    const n = 1 + Math.floor(random.next() * 14);
    const m = 1 + Math.floor(random.next() * 14);
    // Few distinct values (many ties), a fraction that is not a binary one, negatives, some zeros.
    const value = () => random.pick([-3, -1.1, -0, 0, 0.1, 0.2, 0.3, 2, 7.25]) * (random.bool() ? 1 : 3);
    const x = ascending(Array.from({ length: n }, value));
    const y = ascending(Array.from({ length: m }, value));
    const d = allDifferences(x, y);
    for (let k = 1; k <= n * m; k++) {
      const got = kthPairwiseDifference(x, y, k);
      if (got !== d[k - 1]) t.fail(`trial ${trial}, k ${k}: ${got} != ${d[k - 1]} (x ${x}, y ${y})`);
      checked++;
    }
  }
  t.ok(checked > 10_000, `${checked} order statistics equal the brute force`);
  // Larger than n + m candidates, so the selection rounds run (not only the final sort).
  const big = prng(22);
  for (let trial = 0; trial < 20; trial++) {
    const n = 20 + Math.floor(big.next() * 60);
    const m = 20 + Math.floor(big.next() * 60);
    const x = ascending(Array.from({ length: n }, () => Math.round(big.next() * 40) / 4));
    const y = ascending(Array.from({ length: m }, () => (big.bool() ? Math.round(big.next() * 40) / 4 : big.next())));
    const d = allDifferences(x, y);
    let bad = 0;
    for (let k = 1; k <= n * m; k++) if (kthPairwiseDifference(x, y, k) !== d[k - 1]) bad++;
    t.equal(bad, 0, `n ${n}, m ${m}: all ${n * m} order statistics exact`);
  }

  t.throws(() => kthPairwiseDifference([], [1], 1), { name: 'RangeError', message: /xSorted is empty/ });
  t.throws(() => kthPairwiseDifference([1], [], 1), { name: 'RangeError', message: /ySorted is empty/ });
  t.throws(() => kthPairwiseDifference([2, 1], [1], 1), {
    name: 'RangeError',
    message: /xSorted is not sorted ascending at index 1; sort it first/,
  });
  t.throws(() => kthPairwiseDifference([1], [1, 3, 2], 1), { message: /ySorted is not sorted ascending at index 2/ });
  t.throws(() => kthPairwiseDifference([1, Number.NaN], [1], 1), { message: /xSorted\[1\] is NaN/ });
  for (const k of [0, 7, 1.5, Number.NaN])
    t.throws(
      () => kthPairwiseDifference([1, 2], [1, 2, 3], k),
      { name: 'RangeError', message: /k must be an integer from 1 to n\*m = 6/ },
      `k = ${k}`,
    );
  t.throws(() => kthPairwiseDifference([1e308], [-1e308], 1), {
    name: 'RangeError',
    message: /the values are too large: x_i - y_j overflows/,
  });
});

t.test('hodgesLehmann equals the brute force on seeded small arms (ties, n != m, n = 1)', async (t) => {
  const random = prng(33);
  let withInterval = 0;
  let without = 0;
  for (let trial = 0; trial < 600; trial++) {
    const n = trial % 7 === 0 ? 1 : 1 + Math.floor(random.next() * 25);
    const m = trial % 11 === 0 ? 1 : 1 + Math.floor(random.next() * 25);
    const value = () => Math.round(random.next() * 30) / 4 + (random.bool() ? 0 : 0.1);
    const x = Array.from({ length: n }, value);
    const y = Array.from({ length: m }, value);
    const [level, z] = random.pick(Z);
    const want = bruteShift(x, y, level, z);
    const got = hodgesLehmann(x, y, level);
    if (JSON.stringify(got) !== JSON.stringify(want))
      t.fail(`trial ${trial}: ${JSON.stringify(got)} != ${JSON.stringify(want)} (x ${x}, y ${y})`);
    if (got.low === null) without++;
    else withInterval++;
  }
  t.ok(withInterval > 300 && without > 30, `${withInterval} with an interval, ${without} too small for one`);
});

t.test('the interval is the set of shifts the Mann-Whitney test does not reject (no ties)', async (t) => {
  const random = prng(44);
  let checked = 0;
  for (let trial = 0; trial < 150; trial++) {
    const n = 4 + Math.floor(random.next() * 30);
    const m = 4 + Math.floor(random.next() * 30);
    const x = Array.from({ length: n }, () => random.next() * 100 + 10);
    const y = Array.from({ length: m }, () => random.next() * 100);
    const [level] = random.pick(Z);
    const { low, high } = hodgesLehmann(x, y, level);
    if (low === null || high === null) continue;
    const d = allDifferences(x, y);
    const lowAt = d.indexOf(low);
    const highAt = d.lastIndexOf(high);
    const pAt = (shift: number) =>
      mannWhitney(
        x.map((v) => v - shift),
        y,
      ).p;
    // Midway between neighbouring differences: no shifted x equals a y, so the test sees no ties.
    const alpha = 1 - level;
    t.ok(pAt(((d[lowAt + 1] as number) + low) / 2) > alpha, `trial ${trial}: just above low is not rejected`);
    t.ok(pAt(((d[highAt - 1] as number) + high) / 2) > alpha, `trial ${trial}: just below high is not rejected`);
    if (lowAt > 0) t.ok(pAt(((d[lowAt - 1] as number) + low) / 2) <= alpha, `trial ${trial}: below low is rejected`);
    if (highAt < d.length - 1)
      t.ok(pAt(((d[highAt + 1] as number) + high) / 2) <= alpha, `trial ${trial}: above high is rejected`);
    checked++;
  }
  t.ok(checked > 100, `${checked} intervals checked`);
});

t.test('hodgesLehmann on Hollander & Wolfe (1973) p. 69: the estimate R reports, the exact interval', async (t) => {
  // The data of R's ?wilcox.test example, whose output gives "difference in location 0.305".
  const x = [0.8, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46];
  const y = [1.15, 0.88, 0.9, 0.74, 1.21];
  const close = (got: number | null, want: number) => got !== null && Math.abs(got - want) < 1e-12;
  const s95 = hodgesLehmann(x, y, 0.95);
  t.ok(close(s95.estimate, 0.305), `estimate ${s95.estimate}`);
  // The exact null distribution of U for n = 10, m = 5 (the Mann-Whitney recurrence, computed once
  // in Python, as R's qwilcox does) has P(U <= 8) <= 0.025 < P(U <= 9) and P(U <= 11) <= 0.05 <
  // P(U <= 12): C = 8 at 95% and 11 at 90%, which the formula also gives. So these are the exact
  // distribution-free intervals: D_(9), D_(42) and D_(12), D_(39).
  t.ok(close(s95.low, -0.15) && close(s95.high, 0.76), `95%: [${s95.low}, ${s95.high}]`);
  const s90 = hodgesLehmann(x, y, 0.9);
  t.ok(close(s90.low, -0.08) && close(s90.high, 0.72), `90%: [${s90.low}, ${s90.high}]`);
  t.equal(s90.estimate, s95.estimate);
});

t.test('too few devices for the level: the estimate, and null bounds', async (t) => {
  // C = floor(n m/2 - 1/2 - 1.96 sqrt(n m (n+m+1)/12)): -1 for 3 and 3 devices, 0 for 4 and 4.
  t.same(hodgesLehmann([1, 2, 3], [0, 1, 5], 0.95), { estimate: 1, low: null, high: null, level: 0.95 });
  t.same(hodgesLehmann([5], [2], 0.5), { estimate: 3, low: null, high: null, level: 0.5 });
  t.same(hodgesLehmann([1, 2, 3, 4], [0, 1, 2, 9], 0.95), { estimate: 1, low: -8, high: 4, level: 0.95 });
  t.equal(hodgesLehmann([1, 2, 3], [0, 1, 5], 0.8).low, -3, '3 and 3 devices suffice at 80%');
});

t.test('hodgesLehmann refuses bad input with the reason', async (t) => {
  for (const level of [0, 1, -0.5, 95, Number.NaN])
    t.throws(
      () => hodgesLehmann([1], [2], level),
      { name: 'RangeError', message: /level must be strictly between 0 and 1 \(e\.g\. 0\.95\)/ },
      `level ${level}`,
    );
  t.throws(() => hodgesLehmann([], [2], 0.95), { name: 'RangeError', message: /hodgesLehmann: x is empty/ });
  t.throws(() => hodgesLehmann([1], [], 0.95), { name: 'RangeError', message: /hodgesLehmann: y is empty/ });
  t.throws(() => hodgesLehmann([1, Number.NEGATIVE_INFINITY], [2], 0.95), {
    name: 'RangeError',
    message: /hodgesLehmann: x\[1\] is -Infinity/,
  });
  t.throws(() => hodgesLehmann([-1e308], [1e308], 0.95), { name: 'RangeError', message: /overflows/ });
});

t.test('5,000 devices per arm: exact order statistics without the 25 million differences', async (t) => {
  const random = prng(55).next;
  // Log-normal-ish per-device p95 latencies; x is slower by exactly 3 ms.
  const latency = () => Math.exp(3 + 0.5 * Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random()));
  const n = 5000;
  const y = Array.from({ length: n }, latency);
  const x = Array.from({ length: n }, () => latency() + 3);
  const s = hodgesLehmann(x, y, 0.95);
  const { low, high } = s;
  if (low === null || high === null) throw new Error('5,000 devices per arm must give an interval');
  t.ok(low <= 3 && 3 <= high, `the true shift 3 is in [${low}, ${high}]`);
  t.ok(high - low < 2, `and the interval is narrow: ${high - low}`);
  t.ok(Math.abs(s.estimate - 3) < 1, `estimate ${s.estimate}`);
  t.ok(low < s.estimate && s.estimate < high);

  // Exactness, checked by counting over all pairs (no array of them): v is the k-th smallest
  // difference when #{D < v} < k <= #{D <= v}.
  const nm = n * n;
  const xs = ascending(x);
  const ys = ascending(y);
  const c = Math.floor(nm / 2 - 0.5 - 1.959963984540054 * Math.sqrt((nm * (2 * n + 1)) / 12));
  const ranks = [c + 1, nm / 2, nm / 2 + 1, nm - c];
  const values = ranks.map((k) => kthPairwiseDifference(xs, ys, k));
  t.equal(low, values[0]);
  t.equal(high, values[3]);
  t.equal(s.estimate, ((values[1] as number) + (values[2] as number)) / 2);
  const less = values.map(() => 0);
  const atMost = values.map(() => 0);
  for (const a of x)
    for (const b of y) {
      const d = a - b;
      for (let i = 0; i < values.length; i++) {
        if (d < (values[i] as number)) less[i] = (less[i] as number) + 1;
        if (d <= (values[i] as number)) atMost[i] = (atMost[i] as number) + 1;
      }
    }
  for (const [i, k] of ranks.entries())
    t.ok(
      (less[i] as number) < k && k <= (atMost[i] as number),
      `k ${k}: ${less[i]} below, ${atMost[i]} at or below ${values[i]}`,
    );
});

t.test('srmCheck: chi-squared goodness of fit against the intended split', async (t) => {
  const skewed = srmCheck([600, 400], [0.5, 0.5]);
  t.equal(skewed.chi2, 40);
  // scipy.stats.chi2.sf(40, 1)
  relativelyClose(t, skewed.p, 2.5396285894708634e-10, 1e-12, '600/400 on 50/50');
  t.equal(skewed.flagged, true);
  t.same(skewed.expected, [500, 500]);
  t.same(skewed.observed, [600, 400]);

  const fine = srmCheck([510, 490], [0.5, 0.5]);
  t.ok(Math.abs(fine.chi2 - 0.4) < 1e-12);
  // scipy.stats.chi2.sf(0.4, 1)
  relativelyClose(t, fine.p, 0.5270892568655381, 1e-12, '510/490 on 50/50');
  t.equal(fine.flagged, false);
  t.equal(srmCheck([510, 490], [0.5, 0.5], 0.6).flagged, true, 'the threshold is the caller to choose');

  const planned = srmCheck([700, 300], [0.7, 0.3]);
  t.ok(planned.chi2 < 1e-20 && planned.p > 0.999999, `700/300 on 70/30: chi2 ${planned.chi2}, p ${planned.p}`);
  t.equal(planned.flagged, false);
  t.equal(srmCheck([700, 300], [0.5, 0.5]).flagged, true, '700/300 on 50/50 is a mismatch');
  t.same(srmCheck([0, 0], [0.7, 0.3]), { observed: [0, 0], expected: [0, 0], chi2: 0, p: 1, flagged: false });

  for (const shares of [
    [0.5, 0.6],
    [0.5, 0.4],
  ] as [number, number][])
    t.throws(() => srmCheck([1, 1], shares), { name: 'RangeError', message: /must sum to 1/ }, `${shares}`);
  for (const shares of [
    [0, 1],
    [1.5, -0.5],
    [Number.NaN, 0.5],
  ] as [number, number][])
    t.throws(() => srmCheck([1, 1], shares), { name: 'RangeError', message: /intended share must be between 0 and 1/ });
  for (const observed of [
    [-1, 3],
    [1, 2.5],
    [Number.NaN, 1],
  ] as [number, number][])
    t.throws(() => srmCheck(observed, [0.5, 0.5]), { name: 'RangeError', message: /device count \(an integer >= 0\)/ });
  for (const threshold of [0, 1, Number.NaN])
    t.throws(() => srmCheck([1, 1], [0.5, 0.5], threshold), { message: /threshold must be strictly between 0 and 1/ });
});

t.test('looks double in spacing; look indices are exact at the planned times', async (t) => {
  const first = 3_600_000;
  t.equal(lookIndexAt(0, first), 0, 'at the start');
  t.equal(lookIndexAt(-5, first), 0, 'before the start (a clock step back)');
  t.equal(lookIndexAt(first - 1, first), 0, 'just before the first look');
  t.equal(lookIndexAt(first, first), 1, 'at the first look');
  t.equal(lookIndexAt(first + 1, first), 1, 'just after');
  t.equal(lookIndexAt(first * 2 - 1, first), 1);
  t.equal(lookIndexAt(first * 2, first), 2);
  t.equal(lookIndexAt(first * 4, first), 3, 'exactly firstLookMs * 4 is look 3');
  t.equal(lookIndexAt(first * 4 - 1, first), 2);
  for (const f of [first, 3, 0.1, 1000 / 3]) {
    for (let k = 1; k <= 40; k++) {
      const at = lookTimeMs(k, f);
      t.equal(at, f * 2 ** (k - 1));
      if (lookIndexAt(at, f) !== k) t.fail(`firstLookMs ${f}: look ${k} at ${at}`);
      const before = at - at * 2 ** -52; // the double just below a time of this size
      if (lookIndexAt(before, f) !== k - 1) t.fail(`firstLookMs ${f}: just before look ${k} (${before})`);
    }
  }
  t.equal(lookIndexAt(23.999999999999996, 3), 3, 'where 1 + floor(log2(elapsed / first)) would say 4');

  for (const f of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
    t.throws(() => lookIndexAt(1, f), { name: 'RangeError', message: /firstLookMs must be a positive number/ });
    t.throws(() => lookTimeMs(1, f), { name: 'RangeError', message: /lookTimeMs: firstLookMs/ });
  }
  for (const e of [Number.NaN, Number.POSITIVE_INFINITY])
    t.throws(() => lookIndexAt(e, first), { name: 'RangeError', message: /elapsedMs must be a finite number/ });
  for (const k of [0, -1, 1.5, Number.NaN])
    t.throws(() => lookTimeMs(k, first), { name: 'RangeError', message: /look index k must be an integer >= 1/ });
});

t.test('alphaForLook: every look gets a share, and all of them together at most alpha', async (t) => {
  const alpha = 0.05;
  t.ok(Math.abs(alphaForLook(1, alpha) - (alpha * 6) / Math.PI ** 2) < 1e-17, 'look 1: 6 alpha / pi^2 (~0.608 alpha)');
  t.ok(Math.abs(alphaForLook(3, alpha) - alphaForLook(1, alpha) / 9) < 1e-17, 'look 3: a ninth of look 1');
  let sum = 0;
  for (let k = 1; k <= 1_000_000; k++) sum += alphaForLook(k, alpha);
  t.ok(sum < alpha, `the first 10^6 looks spend ${sum} < ${alpha}`);
  // The tail after K looks is ~ 6 alpha / (pi^2 K): the sum approaches alpha, not something smaller.
  t.ok(sum > alpha * (1 - 1e-5), `and nearly all of it: ${alpha - sum} left`);
  for (const k of [0, -2, 1.5, Number.NaN])
    t.throws(() => alphaForLook(k, alpha), { name: 'RangeError', message: /alphaForLook: the look index k/ });
  for (const a of [0, 1, Number.NaN])
    t.throws(() => alphaForLook(1, a), { name: 'RangeError', message: /alpha must be strictly between 0 and 1/ });
});
