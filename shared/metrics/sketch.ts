import { LogCollapsingLowestDenseDDSketch } from '@datadog/sketches-js';

/**
 * DDSketch summaries on the wire (Masson, Rim, Lee: "DDSketch: a fast and fully-mergeable quantile
 * sketch with relative-error guarantees", VLDB 2019). A value v > 0 falls in bin
 * k = ceil(log_gamma(v)); every value of a bin is within the relative accuracy alpha of the
 * bin's representative value, so every quantile read from the bins is too. Agents accumulate with
 * @datadog/sketches-js (the same mapping: `KeyMapping.key`, `LogarithmicMapping`); what they send,
 * and what the coordinator merges and stores, is this plain form. Pure functions over data.
 *
 * Resolution levels make a sketch fit a byte budget without losing its guarantee: at level L,
 * gamma_L = gamma_0^(2^L), and bin k of level L holds exactly the bins 2k-1 and 2k of level L-1
 * (ceil(ceil(x)/2) = ceil(x/2)), so coarsening is exact and sketches of different levels merge at
 * the coarser one. Level 0 is 1% relative accuracy; each level roughly doubles it.
 */

/** Relative accuracy at level 0 (1%). */
export const BASE_RELATIVE_ACCURACY = 0.01;
const BASE_GAMMA = (1 + BASE_RELATIVE_ACCURACY) / (1 - BASE_RELATIVE_ACCURACY);
/** Coarser than this, a sketch is one or two bins whatever it holds. */
export const MAX_SKETCH_LEVEL = 16;
/** Bins (positive and negative together) a sketch may carry on the wire. */
export const MAX_WIRE_BINS = 1024;

export interface SketchBins {
  /** The key of counts[0]. */
  offset: number;
  counts: number[];
}

export interface WireSketch {
  level: number;
  count: number;
  sum: number;
  min: number;
  max: number;
  /** Values the library maps to no bin: 0, and magnitudes below its smallest mappable value. */
  zeros: number;
  positive?: SketchBins;
  /** Bins of |v| for negative values. */
  negative?: SketchBins;
}

export function gammaAt(level: number): number {
  return BASE_GAMMA ** (2 ** level);
}

/** The relative accuracy a sketch of this level guarantees for every quantile. */
export function relativeAccuracyAt(level: number): number {
  const g = gammaAt(level);
  return (g - 1) / (g + 1);
}

export function emptySketch(level = 0): WireSketch {
  return { level, count: 0, sum: 0, min: 0, max: 0, zeros: 0 };
}

/** The bins of a @datadog/sketches-js store, trimmed of empty bins at both ends. */
function binsOfStore(store: DenseStore): SketchBins | undefined {
  if (store.count === 0) return undefined;
  const counts: number[] = [];
  let first: number | null = null;
  for (let key = store.minKey; key <= store.maxKey; key++) {
    const c = store.bins[key - store.offset] ?? 0;
    if (first === null) {
      if (c === 0) continue;
      first = key;
    }
    counts.push(Math.round(c));
  }
  if (first === null) return undefined;
  while (counts.length > 0 && counts[counts.length - 1] === 0) counts.pop();
  return { offset: first, counts };
}

/** What this module reads of a @datadog/sketches-js DenseStore. */
interface DenseStore {
  bins: number[];
  count: number;
  minKey: number;
  maxKey: number;
  offset: number;
}

/** The shape of a @datadog/sketches-js sketch this module reads (level 0, i.e. alpha 1%). */
export interface LibrarySketch {
  store: DenseStore;
  negativeStore: DenseStore;
  zeroCount: number;
  count: number;
  sum: number;
  min: number;
  max: number;
}

/** Bins an accumulating sketch keeps (1% accuracy over a factor of ~1e17) before collapsing its lowest. */
const ACCUMULATOR_BIN_LIMIT = 2048;

/**
 * A @datadog/sketches-js sketch to accumulate values in, with the mapping `fromLibrarySketch`
 * reads (level 0): the agent's, and anything that must build the summaries an agent would.
 */
export function newAccumulator(): LogCollapsingLowestDenseDDSketch {
  return new LogCollapsingLowestDenseDDSketch({
    relativeAccuracy: BASE_RELATIVE_ACCURACY,
    binLimit: ACCUMULATOR_BIN_LIMIT,
  });
}

/** The wire sketch of these values, accumulated as the agent does. */
export function sketchOfValues(values: Iterable<number>): WireSketch {
  const s = newAccumulator();
  for (const v of values) s.accept(v);
  return fromLibrarySketch(s);
}

/** A level-0 library sketch (relativeAccuracy BASE_RELATIVE_ACCURACY) in wire form. */
export function fromLibrarySketch(s: LibrarySketch): WireSketch {
  const out: WireSketch = {
    level: 0,
    count: s.count,
    sum: s.sum,
    min: s.count > 0 ? s.min : 0,
    max: s.count > 0 ? s.max : 0,
    zeros: Math.round(s.zeroCount),
  };
  const positive = binsOfStore(s.store);
  const negative = binsOfStore(s.negativeStore);
  if (positive) out.positive = positive;
  if (negative) out.negative = negative;
  return out;
}

export function binCount(s: WireSketch): number {
  return (s.positive?.counts.length ?? 0) + (s.negative?.counts.length ?? 0);
}

function coarsenBins(bins: SketchBins | undefined, steps: number): SketchBins | undefined {
  if (!bins || steps === 0) return bins;
  const factor = 2 ** steps;
  // Key k at level L goes to ceil(k / 2^steps) at level L + steps (see the module comment).
  const first = Math.ceil(bins.offset / factor);
  const last = Math.ceil((bins.offset + bins.counts.length - 1) / factor);
  const counts = new Array<number>(last - first + 1).fill(0);
  for (let i = 0; i < bins.counts.length; i++) {
    const key = Math.ceil((bins.offset + i) / factor);
    counts[key - first] = (counts[key - first] as number) + (bins.counts[i] as number);
  }
  return { offset: first, counts };
}

/** The same sketch at a coarser level (exact: no value moves to another quantile). */
export function coarsen(s: WireSketch, level: number): WireSketch {
  if (level <= s.level) return s;
  const steps = level - s.level;
  const out: WireSketch = { ...s, level };
  const positive = coarsenBins(s.positive, steps);
  const negative = coarsenBins(s.negative, steps);
  if (positive) out.positive = positive;
  if (negative) out.negative = negative;
  return out;
}

/** Coarsens until the sketch has at most `maxBins` bins (or the coarsest level). */
export function fitBins(s: WireSketch, maxBins: number): WireSketch {
  let out = s;
  while (binCount(out) > maxBins && out.level < MAX_SKETCH_LEVEL) out = coarsen(out, out.level + 1);
  return out;
}

function addBins(into: Map<number, number>, bins: SketchBins | undefined): void {
  if (!bins) return;
  for (let i = 0; i < bins.counts.length; i++) {
    const c = bins.counts[i] as number;
    if (c !== 0) into.set(bins.offset + i, (into.get(bins.offset + i) ?? 0) + c);
  }
}

function binsOf(map: Map<number, number>): SketchBins | undefined {
  if (map.size === 0) return undefined;
  let lo = Number.POSITIVE_INFINITY;
  let hi = Number.NEGATIVE_INFINITY;
  for (const k of map.keys()) {
    if (k < lo) lo = k;
    if (k > hi) hi = k;
  }
  const counts = new Array<number>(hi - lo + 1).fill(0);
  for (const [k, c] of map) counts[k - lo] = c;
  return { offset: lo, counts };
}

/**
 * The sketch of both inputs' values together (DDSketch is fully mergeable: the result is the
 * sketch of the union), at the coarser of their levels (an empty input changes nothing).
 */
export function mergeSketches(a: WireSketch, b: WireSketch): WireSketch {
  // An empty sketch is the identity whatever its level: a coarse empty one must not coarsen the rest.
  if (b.count === 0) return a;
  if (a.count === 0) return b;
  const level = Math.max(a.level, b.level);
  const ca = coarsen(a, level);
  const cb = coarsen(b, level);
  const positive = new Map<number, number>();
  const negative = new Map<number, number>();
  addBins(positive, ca.positive);
  addBins(positive, cb.positive);
  addBins(negative, ca.negative);
  addBins(negative, cb.negative);
  const out: WireSketch = {
    level,
    count: a.count + b.count,
    sum: a.sum + b.sum,
    min: Math.min(a.min, b.min),
    max: Math.max(a.max, b.max),
    zeros: a.zeros + b.zeros,
  };
  const p = binsOf(positive);
  const n = binsOf(negative);
  if (p) out.positive = p;
  if (n) out.negative = n;
  return out;
}

/** Merges many sketches (an empty level-0 sketch for none). */
export function mergeAll(sketches: Iterable<WireSketch>): WireSketch {
  let out = emptySketch();
  for (const s of sketches) out = mergeSketches(out, s);
  return out;
}

/** The representative value of bin `key` at `level` (the library's KeyMapping.value). */
function valueOfKey(key: number, level: number): number {
  const g = gammaAt(level);
  return g ** key * (2 / (1 + g));
}

/**
 * The value at quantile q in [0, 1] (null for an empty sketch): within the level's relative
 * accuracy of the exact quantile, and clamped to the exact min and max the sketch carries.
 * Rank as in @datadog/sketches-js getValueAtQuantile: rank = q * (count - 1), lower bin.
 */
export function quantile(s: WireSketch, q: number): number | null {
  if (s.count === 0) return null;
  if (q <= 0) return s.min;
  if (q >= 1) return s.max;
  const rank = q * (s.count - 1);
  let seen = 0;
  let value: number | null = null;
  const negCounts = s.negative?.counts ?? [];
  // Negative values, most negative first: highest |v| key first.
  for (let i = negCounts.length - 1; i >= 0 && value === null; i--) {
    seen += negCounts[i] as number;
    if (seen > rank) value = -valueOfKey((s.negative as SketchBins).offset + i, s.level);
  }
  if (value === null) {
    seen += s.zeros;
    if (seen > rank) value = 0;
  }
  const posCounts = s.positive?.counts ?? [];
  for (let i = 0; i < posCounts.length && value === null; i++) {
    seen += posCounts[i] as number;
    if (seen > rank) value = valueOfKey((s.positive as SketchBins).offset + i, s.level);
  }
  if (value === null) value = s.max;
  return Math.min(s.max, Math.max(s.min, value));
}

export function mean(s: WireSketch): number | null {
  return s.count === 0 ? null : s.sum / s.count;
}
