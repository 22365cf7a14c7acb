import { normalCdf, normalQuantile } from './normal.js';

/**
 * Rank statistics for comparing two arms of an experiment where the device is the unit: each arm
 * is one number per device (say, each device's p95 latency). Rank methods because such numbers
 * are skewed and heavy-tailed (a few slow devices), where a t-test's mean is at the mercy of the
 * slowest device; ranks make no assumption about the shape of the distribution. Pure.
 *
 * - mannWhitney: is one arm shifted relative to the other (Mann & Whitney 1947; the normal
 *   approximation with tie and continuity corrections, as scipy.stats.mannwhitneyu with
 *   method='asymptotic', use_continuity=True, and R's wilcox.test with exact=FALSE).
 * - hodgesLehmann: by how much, with a distribution-free confidence interval (Hodges & Lehmann
 *   1963; Bauer 1972; Hollander & Wolfe, Nonparametric Statistical Methods, ch. 4).
 */

export interface MannWhitney {
  /** Pairs (x_i, y_j) with x_i > y_j, ties counting 1/2: n*m/2 when neither arm tends higher. */
  u: number;
  /** Normal approximation of u, continuity and tie corrected; > 0 when x tends higher. */
  z: number;
  /** Two-sided p-value. */
  p: number;
}

export interface Shift {
  /** Hodges-Lehmann estimate of the shift of x relative to y: the median of all x_i - y_j. */
  estimate: number;
  /** Confidence interval for the shift; null when the arms are too small for this level. */
  low: number | null;
  high: number | null;
  level: number;
}

/** A bad arm is refused by name, with what to do about it. */
function checkArm(values: ArrayLike<number>, name: string, fn: string): void {
  if (values.length === 0) throw new RangeError(`${fn}: ${name} is empty; each arm needs at least one device`);
  for (let i = 0; i < values.length; i++) {
    const v = values[i] as number;
    if (!Number.isFinite(v))
      throw new RangeError(
        `${fn}: ${name}[${i}] is ${v}; every value must be a finite number (leave out devices without one)`,
      );
  }
}

/** Ascending, as doubles (a Float64Array sorts numerically, with no comparator to call). */
function sortedCopy(values: ArrayLike<number>): Float64Array {
  return Float64Array.from(values).sort();
}

/**
 * The Mann-Whitney U test, two-sided. O((n+m) log(n+m)): both arms are sorted and merged, and each
 * run of equal values adds (x's in the run) * (y's below it + y's in the run / 2) to u, which is the
 * rank-sum form of U without ever summing ranks (exact in doubles: u is a multiple of 1/2).
 *
 * Var(U) = n*m/12 * ((N+1) - sum(t^3 - t) / (N(N-1))), t the size of each run of ties, N = n+m;
 * z = sign(d) * max(|d| - 1/2, 0) / sd with d = u - n*m/2; p = min(1, 2 * Phi(-|z|)). This is
 * scipy's p-value (it takes U = max(U1, U2), which is the |d| form). When every value is tied the
 * variance is 0 and the arms cannot differ: z = 0, p = 1.
 */
export function mannWhitney(x: readonly number[], y: readonly number[]): MannWhitney {
  checkArm(x, 'x', 'mannWhitney');
  checkArm(y, 'y', 'mannWhitney');
  const xs = sortedCopy(x);
  const ys = sortedCopy(y);
  const n = xs.length;
  const m = ys.length;
  const total = n + m;
  let u = 0;
  let ties = 0;
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    const v = j >= m || (i < n && (xs[i] as number) <= (ys[j] as number)) ? (xs[i] as number) : (ys[j] as number);
    let cx = 0;
    while (i < n && xs[i] === v) {
      i++;
      cx++;
    }
    let cy = 0;
    while (j < m && ys[j] === v) {
      j++;
      cy++;
    }
    u += cx * (j - cy) + (cx * cy) / 2;
    const t = cx + cy;
    ties += t * t * t - t;
  }
  const variance = ((n * m) / 12) * (total + 1 - ties / (total * (total - 1)));
  if (!(variance > 0)) return { u, z: 0, p: 1 };
  const d = u - (n * m) / 2;
  const z = (Math.sign(d) * Math.max(Math.abs(d) - 0.5, 0)) / Math.sqrt(variance);
  return { u, z, p: Math.min(1, 2 * normalCdf(-Math.abs(z))) };
}

/** Refuses arms whose differences would overflow to +-Infinity (no difference could be reported). */
function checkDifferences(xs: Float64Array, ys: Float64Array, fn: string): void {
  const widest = [(xs.at(-1) as number) - (ys[0] as number), (xs[0] as number) - (ys.at(-1) as number)];
  if (!widest.every(Number.isFinite))
    throw new RangeError(`${fn}: the values are too large: x_i - y_j overflows; rescale them (e.g. to other units)`);
}

/**
 * The Hodges-Lehmann shift of x relative to y with a `level` confidence interval.
 *
 * The estimate is the median of the n*m differences D = x_i - y_j (the mean of the two middle ones
 * when n*m is even). The interval inverts the two-sided Mann-Whitney test: a shift s is inside it
 * when the test of (x - s) against y does not reject at 1 - level. U(s) = #{D > s}, so the shifts
 * not rejected run from an order statistic of D to another (Hollander & Wolfe, ch. 4, 4.3; Bauer
 * 1972):
 *
 *   C = floor(n*m/2 - 1/2 - z * sqrt(n*m*(n+m+1)/12)),  z = Phi^-1((1 + level)/2)
 *   interval = [D_(C+1), D_(n*m-C)], D sorted ascending, 1-based.
 *
 * C is the largest c whose P(U <= c) <= (1 - level)/2 under the continuity-corrected normal
 * approximation of the tie-free null distribution of U: P(U <= c) ~ Phi((c + 1/2 - n*m/2) / sd).
 * The 1/2 makes the interval exactly the set of shifts mannWhitney (continuity corrected) does not
 * reject at 1 - level, when the shifted data have no ties; and against the exact null
 * distribution of U (all n, m up to 24 at levels 0.8, 0.9, 0.95, 0.99) it gives the exact C in 65%
 * of cases and a too-narrow interval in 9%, where dropping the 1/2 (C = floor(n*m/2 - z * sd))
 * gives 45% and 38%. With ties the true variance of U is smaller than the tie-free one used here,
 * which only widens the interval (conservative). C < 0: even the widest interval [min D, max D]
 * does not reach the level; low and high are null (more devices needed).
 *
 * Cost: O((n+m) log(n+m)) to sort, then at most four selections (kthPairwiseDifference); never the
 * n*m differences themselves (25 million pairs at 5,000 devices per arm).
 */
export function hodgesLehmann(x: readonly number[], y: readonly number[], level: number): Shift {
  if (!(level > 0 && level < 1))
    throw new RangeError(`hodgesLehmann: level must be strictly between 0 and 1 (e.g. 0.95), got ${level}`);
  checkArm(x, 'x', 'hodgesLehmann');
  checkArm(y, 'y', 'hodgesLehmann');
  const xs = sortedCopy(x);
  const ys = sortedCopy(y);
  checkDifferences(xs, ys, 'hodgesLehmann');
  const n = xs.length;
  const m = ys.length;
  const pairs = n * m;
  const estimate =
    pairs % 2 === 1
      ? selectKth(xs, ys, (pairs + 1) / 2)
      : (selectKth(xs, ys, pairs / 2) + selectKth(xs, ys, pairs / 2 + 1)) / 2;
  const z = normalQuantile((1 + level) / 2);
  const c = Math.floor(pairs / 2 - 0.5 - z * Math.sqrt((pairs * (n + m + 1)) / 12));
  if (c < 0) return { estimate, low: null, high: null, level };
  return { estimate, low: selectKth(xs, ys, c + 1), high: selectKth(xs, ys, pairs - c), level };
}

/** Refuses a list that is not ascending (a wrong order would give a wrong answer, silently). */
function checkSorted(values: readonly number[], name: string): void {
  for (let i = 1; i < values.length; i++)
    if (!((values[i - 1] as number) <= (values[i] as number)))
      throw new RangeError(`kthPairwiseDifference: ${name} is not sorted ascending at index ${i}; sort it first`);
}

/**
 * The k-th smallest (1-based) of the n*m differences x_i - y_j, both lists sorted ascending. Exact:
 * the result is one of the differences, bit for bit as x_i - y_j computes it. Time
 * O((n + m + n log n) log(n*m)), memory O(n + m); see selectKth.
 */
export function kthPairwiseDifference(xSorted: readonly number[], ySorted: readonly number[], k: number): number {
  checkArm(xSorted, 'xSorted', 'kthPairwiseDifference');
  checkArm(ySorted, 'ySorted', 'kthPairwiseDifference');
  checkSorted(xSorted, 'xSorted');
  checkSorted(ySorted, 'ySorted');
  const pairs = xSorted.length * ySorted.length;
  if (!(Number.isInteger(k) && k >= 1 && k <= pairs))
    throw new RangeError(`kthPairwiseDifference: k must be an integer from 1 to n*m = ${pairs}, got ${k}`);
  const xs = Float64Array.from(xSorted);
  const ys = Float64Array.from(ySorted);
  checkDifferences(xs, ys, 'kthPairwiseDifference');
  return selectKth(xs, ys, k);
}

/** Candidates drawn per round to place the two pivots (Floyd & Rivest's sampling). */
const SAMPLE = 128;
/**
 * How far either side of the k-th's expected place in the sorted sample the pivots go: ~2 standard
 * deviations of that place (sqrt(SAMPLE * f * (1 - f)) <= 5.7), so the k-th falls between them in
 * ~95% of rounds, which keep ~2 * SPREAD / SAMPLE (~19%) of the candidates.
 */
const SPREAD = 12;

/**
 * Selection in the sorted matrix of differences (Johnson & Mizoguchi, "Selecting the Kth element
 * in X + Y and X1 + X2 + ... + Xm", SIAM J. Comput. 1978; Monahan, "Algorithm 616: fast computation
 * of the Hodges-Lehmann location estimator", ACM TOMS 1984). Row i is x_i, column c is y_(m-1-c),
 * so D(i, c) = x_i - y_(m-1-c) ascends along rows and columns (floating-point subtraction is
 * monotone in each operand, so this holds for the computed differences too). Each row keeps a
 * window [lo_i, hi_i) of candidate columns; the k-th smallest is always among the candidates, at
 * rank `rank` within them.
 *
 * Each round takes two pivots a <= b among the candidates and counts, per row, the differences
 * < and <= each (one pass per pivot of a pointer that only moves left, since the boundary column
 * cannot move right as x_i grows: O(n + m)). Then the answer is a pivot, or only the candidates
 * below a, between a and b, or above b stay. The pivots come from a sample of SAMPLE candidates
 * drawn uniformly (one pass over the rows): the sample's elements either side of where the k-th
 * should fall in it (Floyd & Rivest, "Expected time bounds for selection", CACM 1975, as Monahan
 * does with one random pivot), so a typical round keeps a fifth of the candidates. After a round
 * that kept more than three quarters, a = b = the weighted median of the rows' middle candidates
 * (Johnson & Mizoguchi; O(n log n)), which removes at least a quarter whatever the data: the rows
 * holding half the candidates have their middle <= it and half of each such row is <= its
 * middle; likewise >=. So at most 2 log_{4/3}(n*m) rounds, O((n + m + n log n) log(n*m)) in the
 * worst case, and O((n + m) log(n*m)) expected with a small constant (~6 rounds at n = m = 5000),
 * until at most n + m candidates are left, which are sorted and indexed. Memory O(n + m): no n*m
 * array, ever. The draws come from a generator seeded by k, so a call always does the same work;
 * the result never depends on them.
 */
function selectKth(xs: Float64Array, ys: Float64Array, k: number): number {
  const n = xs.length;
  const m = ys.length;
  const lo = new Int32Array(n);
  const hi = new Int32Array(n).fill(m);
  const belowA = new Int32Array(n);
  const atOrBelowA = new Int32Array(n);
  const belowB = new Int32Array(n);
  const atOrBelowB = new Int32Array(n);
  const middles = new Float64Array(n);
  const weights = new Float64Array(n);
  const order = new Uint32Array(n);
  const picks = new Float64Array(SAMPLE);
  const sample = new Float64Array(SAMPLE);
  const at = (i: number, c: number) => (xs[i] as number) - (ys[m - 1 - c] as number);
  let state = (0x9e3779b9 ^ k) >>> 0;
  /** A uniform draw from [0, 1) (a 32-bit LCG, Numerical Recipes' constants): enough for a sample. */
  const draw = () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 4294967296;
  };
  /** SAMPLE candidates drawn uniformly (with replacement), sorted: one pass over the rows. */
  const drawSample = (candidates: number): void => {
    for (let s = 0; s < SAMPLE; s++) picks[s] = Math.floor(draw() * candidates);
    picks.sort();
    let i = 0;
    let start = 0;
    for (let s = 0; s < SAMPLE; s++) {
      const pick = picks[s] as number;
      while (pick >= start + (hi[i] as number) - (lo[i] as number)) {
        start += (hi[i] as number) - (lo[i] as number);
        i++;
      }
      sample[s] = at(i, (lo[i] as number) + pick - start);
    }
    sample.sort();
  };
  const weightedMedianOfMiddles = (candidates: number): number => {
    let rows = 0;
    for (let i = 0; i < n; i++) {
      const width = (hi[i] as number) - (lo[i] as number);
      if (width === 0) continue;
      middles[rows] = at(i, ((lo[i] as number) + (hi[i] as number) - 1) >> 1);
      weights[rows] = width;
      order[rows] = rows;
      rows++;
    }
    const byMiddle = order.subarray(0, rows).sort((a, b) => (middles[a] as number) - (middles[b] as number));
    let weight = 0;
    for (const r of byMiddle) {
      weight += weights[r] as number;
      if (weight * 2 >= candidates) return middles[r] as number;
    }
    /* c8 ignore next */
    throw new Error('selectKth: the row weights do not add up to the candidates (a bug)');
  };
  /** Per row, the candidate columns end where D >= pivot (below) and D > pivot (atOrBelow); the totals. */
  const split = (pivot: number, below: Int32Array, atOrBelow: Int32Array): [number, number] => {
    let cLess = m;
    let cLeq = m;
    let less = 0;
    let leq = 0;
    for (let i = 0; i < n; i++) {
      while (cLess > 0 && at(i, cLess - 1) >= pivot) cLess--;
      while (cLeq > 0 && at(i, cLeq - 1) > pivot) cLeq--;
      const l = lo[i] as number;
      const h = hi[i] as number;
      below[i] = Math.min(Math.max(cLess, l), h);
      atOrBelow[i] = Math.min(Math.max(cLeq, l), h);
      less += (below[i] as number) - l;
      leq += (atOrBelow[i] as number) - l;
    }
    return [less, leq];
  };
  let candidates = n * m;
  let rank = k;
  let slowRound = false;
  while (candidates > n + m) {
    let a: number;
    let b: number;
    if (slowRound) {
      a = weightedMedianOfMiddles(candidates);
      b = a;
    } else {
      drawSample(candidates);
      const place = (rank / candidates) * SAMPLE;
      a = sample[Math.max(0, Math.floor(place) - SPREAD)] as number;
      b = sample[Math.min(SAMPLE - 1, Math.floor(place) + SPREAD)] as number;
    }
    const [lessA, leqA] = split(a, belowA, atOrBelowA);
    const [lessB, leqB] = b === a ? [lessA, leqA] : split(b, belowB, atOrBelowB);
    const before = candidates;
    if (rank <= lessA) {
      hi.set(belowA);
      candidates = lessA;
    } else if (rank <= leqA) {
      return a;
    } else if (rank <= lessB) {
      lo.set(atOrBelowA);
      hi.set(belowB);
      rank -= leqA;
      candidates = lessB - leqA;
    } else if (rank <= leqB) {
      return b;
    } else {
      lo.set(b === a ? atOrBelowA : atOrBelowB);
      rank -= leqB;
      candidates -= leqB;
    }
    slowRound = candidates * 4 > before * 3;
  }
  const rest = new Float64Array(candidates);
  let r = 0;
  for (let i = 0; i < n; i++) for (let c = lo[i] as number; c < (hi[i] as number); c++) rest[r++] = at(i, c);
  return rest.sort()[rank - 1] as number;
}
